// A task's state machine (docs/circles.md, `gathering.circles.states`) and the API's steps
// that move it: a card shows only the steps whose move the machine allows from where it is.

export const STATUSES = [
  "pending",
  "offered",
  "in_progress",
  "in_review",
  "changes_requested",
  "blocked",
  "completed",
  "failed",
  "cancelled",
] as const;

export type Status = (typeof STATUSES)[number];

export const STATUS_LABEL: Record<Status, string> = {
  pending: "Pending",
  offered: "Offered",
  in_progress: "In progress",
  in_review: "In review",
  changes_requested: "Changes requested",
  blocked: "Blocked",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
};

/** Which status may follow which (the server's `NEXT`). */
export const NEXT: Record<Status, readonly Status[]> = {
  pending: ["offered", "in_progress", "blocked", "cancelled"],
  blocked: ["pending", "failed", "cancelled"],
  offered: ["in_progress", "pending", "offered", "cancelled"],
  in_progress: ["in_review", "completed", "failed", "cancelled"],
  in_review: ["completed", "changes_requested", "failed", "cancelled"],
  changes_requested: ["in_progress", "failed", "cancelled"],
  completed: [],
  failed: [],
  cancelled: [],
};

export type Step = "offer" | "claim" | "refuse" | "submit" | "wait" | "approve" | "changes" | "reject" | "cancel";

export const STEP_LABEL: Record<Step, string> = {
  offer: "Offer",
  claim: "Claim",
  refuse: "Refuse",
  submit: "Submit work",
  wait: "Wait for…",
  approve: "Approve",
  changes: "Request changes",
  reject: "Reject",
  cancel: "Cancel task",
};

/** Where each step takes a task (any one of these). */
const TARGETS: Record<Step, readonly Status[]> = {
  offer: ["offered"],
  claim: ["in_progress"],
  refuse: ["offered", "pending"],
  submit: ["in_review", "completed"],
  wait: ["blocked"],
  approve: ["completed"],
  changes: ["changes_requested"],
  reject: ["failed"],
  cancel: ["cancelled"],
};

/** The steps the API offers from each status (the machine's other moves are the server's own:
 * a blocked task becomes pending when what it waits for completes, a failed attempt fails…). */
const STEPS_FROM: Record<Status, readonly Step[]> = {
  pending: ["offer", "claim", "wait", "cancel"],
  blocked: ["cancel"],
  offered: ["claim", "refuse", "cancel"],
  in_progress: ["submit", "cancel"],
  in_review: ["approve", "changes", "reject", "cancel"],
  changes_requested: ["claim", "cancel"],
  completed: [],
  failed: [],
  cancelled: [],
};

export function isStatus(value: string): value is Status {
  return (STATUSES as readonly string[]).includes(value);
}

export function ended(status: string): boolean {
  return status === "completed" || status === "failed" || status === "cancelled";
}

/** The steps a task in `status` may take, given the statuses allowed from there (the
 * machine's, or the `details.allowed` of a refused move). */
export function stepsFrom(status: string, allowed?: readonly string[]): Step[] {
  if (!isStatus(status)) return [];
  const next = allowed ?? NEXT[status];
  return STEPS_FROM[status].filter((step) => TARGETS[step].some((to) => next.includes(to)));
}
