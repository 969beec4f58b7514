import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent, type ReactNode } from "react";

import { api } from "../../api/client";
import { ProblemView } from "../../components/ProblemView";
import { ended, STEP_LABEL, stepsFrom, type Step } from "./moves";
import { step as call, StepRefused } from "./refusal";
import { keys, type Circle, type Member, type Task } from "./types";

type Request =
  | { step: "offer" }
  | { step: "claim"; member_id: number }
  | { step: "refuse"; member_id: number; reason: string }
  | { step: "submit"; member_id: number; text: string; summary: string; files: string[] }
  | { step: "wait"; blocked_by: number }
  | { step: "approve" | "reject"; feedback: string }
  | { step: "changes"; feedback: string }
  | { step: "cancel"; reason: string };

function send(circleId: number, taskId: number, request: Request) {
  const path = { circle_id: circleId, task_id: taskId };
  const params = { path };
  switch (request.step) {
    case "offer":
      return call(api.POST("/circles/{circle_id}/tasks/{task_id}/offer", { params }));
    case "claim":
      return call(api.POST("/circles/{circle_id}/tasks/{task_id}/claim", { params, body: { member_id: request.member_id } }));
    case "refuse":
      return call(
        api.POST("/circles/{circle_id}/tasks/{task_id}/refuse", {
          params,
          body: { member_id: request.member_id, reason: request.reason },
        }),
      );
    case "submit":
      return call(
        api.POST("/circles/{circle_id}/tasks/{task_id}/submit", {
          params,
          body: { member_id: request.member_id, text: request.text, summary: request.summary, files: request.files },
        }),
      );
    case "wait":
      return call(
        api.POST("/circles/{circle_id}/tasks/{task_id}/dependencies", { params, body: { blocked_by: request.blocked_by } }),
      );
    case "approve":
      return call(api.POST("/circles/{circle_id}/tasks/{task_id}/approve", { params, body: { feedback: request.feedback } }));
    case "reject":
      return call(api.POST("/circles/{circle_id}/tasks/{task_id}/reject", { params, body: { feedback: request.feedback } }));
    case "changes":
      return call(
        api.POST("/circles/{circle_id}/tasks/{task_id}/review", {
          params,
          body: { verdict: "changes_requested", feedback: request.feedback },
        }),
      );
    case "cancel":
      return call(api.POST("/circles/{circle_id}/tasks/{task_id}/cancel", { params, body: { reason: request.reason } }));
  }
}

/** Who may claim the task: the member it is offered to, its author after changes, or a lead. */
function claimers(task: Task, members: Member[]): Member[] {
  const able = members.filter((member) => member.active && !member.gone);
  const first = task.status === "changes_requested" ? task.assignee_id : task.status === "offered" ? task.offered_to : null;
  return able.filter((member) => member.id === first || member.role === "lead");
}

interface Context {
  circle: Circle;
  task: Task;
  members: Member[];
  tasks: Task[];
}

/** Whether a step the state machine allows makes sense here (someone may take it). */
function applies(step: Step, { circle, task, members, tasks }: Context): boolean {
  switch (step) {
    case "offer":
      return circle.status === "active";
    case "claim":
      return claimers(task, members).length > 0;
    case "refuse":
      return task.offered_to !== null;
    case "submit":
      return task.assignee_id !== null;
    case "wait":
      return tasks.some((other) => other.id !== task.id && !ended(other.status));
    default:
      return true;
  }
}

const SEND_LABEL: Record<Step, string> = {
  offer: "Offer",
  claim: "Claim it",
  refuse: "Refuse it",
  submit: "Hand it in",
  wait: "Make it wait",
  approve: "Send approval",
  changes: "Send the changes",
  reject: "Send rejection",
  cancel: "Cancel the task",
};

function Field({ label, children }: { label: string; children: ReactNode }) {
  return (
    <label>
      {label}
      {children}
    </label>
  );
}

/** The form a step needs before it is sent (none for offer). */
function StepForm({
  step,
  context,
  busy,
  onSend,
  onClose,
}: {
  step: Step;
  context: Context;
  busy: boolean;
  onSend: (request: Request) => void;
  onClose: () => void;
}) {
  const { task, members, tasks } = context;
  const name = (id: number | null) => members.find((member) => member.id === id)?.name ?? `member ${String(id)}`;
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const text = (key: string) => String(form.get(key) ?? "");
    switch (step) {
      case "claim":
        return onSend({ step, member_id: Number(form.get("member_id")) });
      case "refuse":
        return onSend({ step, member_id: task.offered_to ?? 0, reason: text("reason") });
      case "submit":
        return onSend({
          step,
          member_id: task.assignee_id ?? 0,
          text: text("text"),
          summary: text("summary"),
          files: text("files")
            .split(/[\n,]/)
            .map((item) => item.trim())
            .filter(Boolean),
        });
      case "wait":
        return onSend({ step, blocked_by: Number(form.get("blocked_by")) });
      case "approve":
      case "reject":
      case "changes":
        return onSend({ step, feedback: text("feedback") });
      case "cancel":
        return onSend({ step, reason: text("reason") });
      default:
        return onSend({ step: "offer" });
    }
  }
  let fields: ReactNode = null;
  if (step === "claim") {
    fields = (
      <Field label="As">
        <select name="member_id">
          {claimers(task, members).map((member) => (
            <option key={member.id} value={member.id}>
              {member.name} ({member.role})
            </option>
          ))}
        </select>
      </Field>
    );
  } else if (step === "refuse") {
    fields = (
      <Field label={`Why ${name(task.offered_to)} refuses`}>
        <input name="reason" maxLength={2000} />
      </Field>
    );
  } else if (step === "submit") {
    fields = (
      <>
        <p className="muted">As {name(task.assignee_id)}, its assignee.</p>
        <Field label="The work">
          <textarea name="text" required maxLength={80000} />
        </Field>
        <Field label="Summary">
          <input name="summary" maxLength={20000} />
        </Field>
        <Field label="Files changed (one a line)">
          <textarea name="files" rows={2} />
        </Field>
      </>
    );
  } else if (step === "wait") {
    fields = (
      <Field label="Wait for task">
        <select name="blocked_by">
          {tasks
            .filter((other) => other.id !== task.id && !ended(other.status))
            .map((other) => (
              <option key={other.id} value={other.id}>
                #{other.id} {other.title}
              </option>
            ))}
        </select>
      </Field>
    );
  } else if (step === "changes") {
    fields = (
      <Field label="Changes to make">
        <textarea name="feedback" required maxLength={20000} />
      </Field>
    );
  } else if (step === "approve" || step === "reject") {
    fields = (
      <Field label={step === "approve" ? "Feedback (optional)" : "Why it is rejected"}>
        <textarea name="feedback" maxLength={20000} />
      </Field>
    );
  } else if (step === "cancel") {
    fields = (
      <Field label="Why (optional)">
        <input name="reason" maxLength={2000} />
      </Field>
    );
  }
  return (
    <form className="stack step-form" onSubmit={submit} aria-label={`${STEP_LABEL[step]}: task ${task.id}`}>
      {fields}
      <div className="row tight">
        <button type="submit" className="primary" disabled={busy}>
          {SEND_LABEL[step]}
        </button>
        <button type="button" onClick={onClose}>
          Close
        </button>
      </div>
    </form>
  );
}

/** The steps a task may take from where it is, as buttons; those that need more open a form. */
export function TaskSteps(context: Context) {
  const { circle, task } = context;
  const client = useQueryClient();
  const [open, setOpen] = useState<Step | null>(null);
  const [refused, setRefused] = useState<{ status: string; allowed: string[] } | null>(null);
  const run = useMutation({
    mutationFn: (request: Request) => send(circle.id, task.id, request),
    onSuccess: () => {
      setOpen(null);
      setRefused(null);
    },
    onError: (error) => {
      if (error instanceof StepRefused && error.allowed) {
        setRefused({ status: error.status ?? task.status, allowed: error.allowed });
        setOpen(null);
      }
    },
    onSettled: () => client.invalidateQueries({ queryKey: keys.circle(circle.id) }),
  });
  // A refusal's `details.allowed` holds while the task is where the server said it was.
  const allowed = refused && refused.status === task.status ? refused.allowed : undefined;
  const steps = stepsFrom(task.status, allowed).filter((step) => applies(step, context));
  if (!steps.length && !run.error) return null;
  return (
    <div className="stack tight">
      {steps.length ? (
        <div className="row tight" role="group" aria-label={`Moves of task ${task.id}`}>
          {steps.map((step) => (
            <button
              key={step}
              type="button"
              className={step === "approve" ? "primary" : undefined}
              aria-expanded={step === "offer" ? undefined : open === step}
              disabled={run.isPending}
              onClick={() => {
                run.reset();
                if (step === "offer") run.mutate({ step: "offer" });
                else setOpen(open === step ? null : step);
              }}
            >
              {STEP_LABEL[step]}
            </button>
          ))}
        </div>
      ) : null}
      {open ? (
        <StepForm step={open} context={context} busy={run.isPending} onSend={(request) => run.mutate(request)} onClose={() => setOpen(null)} />
      ) : null}
      {run.error ? <ProblemView error={run.error} /> : null}
    </div>
  );
}
