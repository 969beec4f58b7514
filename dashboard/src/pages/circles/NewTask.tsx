import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";

import { api, must } from "../../api/client";
import type { components } from "../../api/schema";
import { ProblemView } from "../../components/ProblemView";
import { parseLevels } from "./competencies";
import { ended } from "./moves";
import { keys, type Circle, type Task } from "./types";

type TaskIn = components["schemas"]["TaskIn"];

/** A new task: offered at once when the circle is active. */
export function NewTask({ circle, tasks }: { circle: Circle; tasks: Task[] }) {
  const client = useQueryClient();
  const [open, setOpen] = useState(false);
  const [invalid, setInvalid] = useState<string | null>(null);
  const create = useMutation({
    mutationFn: (body: TaskIn) =>
      must(api.POST("/circles/{circle_id}/tasks", { params: { path: { circle_id: circle.id } }, body })),
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: keys.circle(circle.id) });
      setOpen(false);
    },
  });
  const reviewTypes = circle.settings.review_types ?? ["general"];
  const open_tasks = tasks.filter((task) => !ended(task.status));

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const requirements = parseLevels(String(form.get("requirements") ?? ""));
    if (typeof requirements === "string") return setInvalid(requirements);
    setInvalid(null);
    const type = String(form.get("task_type") ?? "").trim();
    create.mutate({
      title: String(form.get("title")).trim(),
      description: String(form.get("description") ?? ""),
      task_type: type || "general",
      requirements,
      priority: Number(form.get("priority") || 0),
      review_type: String(form.get("review_type") || reviewTypes[0] || "general"),
      blocked_by: form.getAll("blocked_by").map(Number),
    });
  }

  if (!open) {
    return (
      <div className="row">
        <button type="button" className="primary" onClick={() => setOpen(true)} disabled={circle.status === "archived"}>
          New task
        </button>
        {circle.status === "created" ? (
          <span className="muted">The circle is not active: its tasks wait as pending until it is activated.</span>
        ) : null}
      </div>
    );
  }
  return (
    <form className="card stack" onSubmit={submit} aria-label="New task">
      <div className="form-grid">
        <label>
          Title
          <input name="title" required maxLength={200} autoFocus />
        </label>
        <label>
          Needs (tag=level)
          <input name="requirements" placeholder="python=3" />
        </label>
        <label>
          Kind of work
          <input name="task_type" placeholder="general" pattern="[a-z0-9][a-z0-9_.+#\-]{0,49}" />
        </label>
        <label>
          Priority (0 to 100)
          <input name="priority" type="number" min={0} max={100} defaultValue={0} />
        </label>
        <label>
          Review
          <select name="review_type" defaultValue={reviewTypes[0]}>
            {reviewTypes.map((type) => (
              <option key={type} value={type}>
                {type}
              </option>
            ))}
          </select>
        </label>
        {open_tasks.length ? (
          <label>
            Waits for
            <select name="blocked_by" multiple size={Math.min(4, open_tasks.length)}>
              {open_tasks.map((task) => (
                <option key={task.id} value={task.id}>
                  #{task.id} {task.title}
                </option>
              ))}
            </select>
          </label>
        ) : null}
      </div>
      <label>
        Description
        <textarea name="description" maxLength={20000} rows={3} />
      </label>
      {invalid ? <ProblemView error={new Error(invalid)} /> : null}
      {create.error ? <ProblemView error={create.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={create.isPending}>
          Create task
        </button>
        <button type="button" onClick={() => setOpen(false)}>
          Close
        </button>
      </div>
    </form>
  );
}
