import type { Problem } from "./definition";

/** The problems a check or a refused save found, each with the path it names. */
export function ProblemList({ problems, title = "Problems" }: { problems: Problem[]; title?: string }) {
  if (!problems.length) return null;
  return (
    <div className="problem" role="alert">
      <strong>
        {title} ({problems.length})
      </strong>
      <ul className="problem-list">
        {problems.map((problem, index) => (
          <li key={index}>
            {problem.path ? <code>{problem.path}</code> : null} <span className="badge">{problem.code}</span>{" "}
            {problem.message}
          </li>
        ))}
      </ul>
    </div>
  );
}
