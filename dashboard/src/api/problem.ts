// The server's errors are problem+json: `detail` says what happened, `hint` what to do.

export interface Problem {
  status: number;
  title: string;
  detail: string;
  hint?: string;
  code?: string;
  /** A refused body's mistakes, one line each ("body.cron: invalid cron expression ..."). */
  errors?: string[];
}

export class ProblemError extends Error {
  readonly problem: Problem;

  constructor(problem: Problem) {
    super(problem.detail || problem.title);
    this.name = "ProblemError";
    this.problem = problem;
  }
}

function text(value: unknown): string | undefined {
  return typeof value === "string" && value ? value : undefined;
}

function errorLine(error: unknown): string {
  const fields = (typeof error === "object" && error !== null ? error : {}) as Record<string, unknown>;
  const where = Array.isArray(fields.loc) ? fields.loc.filter((part) => part !== "body").join(".") : "";
  const message = (text(fields.msg) ?? "invalid").replace(/^Value error, /, "");
  return where ? `${where}: ${message}` : message;
}

/** The problem a failed response carries (any shape the server or a proxy sends). */
export function toProblem(status: number, body: unknown): Problem {
  const fields = (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>;
  const title = text(fields.title) ?? `HTTP ${status}`;
  const problem: Problem = {
    status,
    title,
    detail: text(fields.detail) ?? text(fields.message) ?? (typeof body === "string" && body ? body : title),
  };
  const hint = text(fields.hint);
  const code = text(fields.code);
  if (hint) problem.hint = hint;
  if (code) problem.code = code;
  const errors = Array.isArray(fields.errors) ? fields.errors.slice(0, 5).map(errorLine) : [];
  if (errors.length) problem.errors = errors;
  return problem;
}

/** Any thrown value as a problem to show. */
export function asProblem(error: unknown): Problem {
  if (error instanceof ProblemError) return error.problem;
  if (error instanceof Error) return { status: 0, title: "Error", detail: error.message, hint: "check that the server is running, then retry" };
  return { status: 0, title: "Error", detail: String(error) };
}
