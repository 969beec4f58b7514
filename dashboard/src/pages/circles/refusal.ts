// A refused step keeps the server's `details` (the shared `must` keeps detail and hint only):
// an illegal move's 409 lists in `details.allowed` the moves possible from where the task is.

import { ProblemError, toProblem } from "../../api/problem";

export class StepRefused extends ProblemError {
  /** The statuses the task may move to now, when the server said. */
  readonly allowed: string[] | undefined;
  /** Where the task is now, when the server said. */
  readonly status: string | undefined;

  constructor(status: number, body: unknown) {
    super(toProblem(status, body));
    const details = (body as { details?: { allowed?: unknown; status?: unknown } } | null)?.details;
    this.allowed = Array.isArray(details?.allowed) ? details.allowed.map(String) : undefined;
    this.status = typeof details?.status === "string" ? details.status : undefined;
  }
}

/** The data of a call, or a thrown `StepRefused` with the server's details. */
export async function step<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  const { data, error, response } = await call;
  if (!response.ok) throw new StepRefused(response.status, error);
  return data as T;
}
