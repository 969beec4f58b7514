import { asProblem } from "../api/problem";

/** An error as the server put it: what happened (`detail`) and what to do (`hint`). */
export function ProblemView({ error }: { error: unknown }) {
  const problem = asProblem(error);
  return (
    <div className="problem" role="alert">
      <strong>{problem.detail}</strong>
      {problem.errors ? (
        <ul>
          {problem.errors.map((line) => (
            <li key={line}>{line}</li>
          ))}
        </ul>
      ) : null}
      {problem.hint ? <p>{problem.hint}</p> : null}
    </div>
  );
}
