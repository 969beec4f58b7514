import type { CircleSettings } from "./types";

/** The fields of a circle's settings inside a form; read back with `readSettings`. */
export function SettingsFields({ settings }: { settings?: CircleSettings }) {
  return (
    <fieldset className="circle-settings">
      <legend>Settings</legend>
      <label className="inline">
        <input type="checkbox" name="review_required" defaultChecked={settings?.review_required ?? true} />
        Review work before it completes
      </label>
      <label>
        Review types (comma-separated; the first is the default)
        <input name="review_types" defaultValue={(settings?.review_types ?? ["general"]).join(", ")} />
      </label>
      <label>
        Reviewers per task
        <input name="reviewers_per_task" type="number" min={1} max={3} defaultValue={settings?.reviewers_per_task ?? 1} />
      </label>
      <label>
        Attempts per task
        <input name="max_attempts" type="number" min={1} max={50} defaultValue={settings?.max_attempts ?? 5} />
      </label>
      <label>
        Tasks one member holds at once
        <input
          name="max_parallel_tasks"
          type="number"
          min={1}
          max={100}
          defaultValue={settings?.max_parallel_tasks ?? 3}
        />
      </label>
      <label>
        Routing
        <select name="routing" defaultValue={settings?.routing ?? "best_match"}>
          <option value="best_match">best match (competence first)</option>
          <option value="least_loaded">least loaded</option>
        </select>
      </label>
      <label>
        Offer timeout (seconds)
        <input
          name="offer_timeout_seconds"
          type="number"
          min={1}
          max={604800}
          defaultValue={settings?.offer_timeout_seconds ?? 600}
        />
      </label>
    </fieldset>
  );
}

/** The settings in `form`, over `base` (a change replaces the whole). */
export function readSettings(form: FormData, base?: CircleSettings): CircleSettings {
  const types = String(form.get("review_types") ?? "")
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean);
  return {
    ...base,
    review_required: form.get("review_required") === "on",
    review_types: types.length ? types : ["general"],
    reviewers_per_task: Number(form.get("reviewers_per_task")),
    max_attempts: Number(form.get("max_attempts")),
    max_parallel_tasks: Number(form.get("max_parallel_tasks")),
    routing: form.get("routing") === "least_loaded" ? "least_loaded" : "best_match",
    offer_timeout_seconds: Number(form.get("offer_timeout_seconds")),
  };
}
