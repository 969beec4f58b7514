import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useNavigate } from "react-router-dom";
import type { FormEvent } from "react";

import { api, must } from "../../api/client";
import { ProblemView } from "../../components/ProblemView";
import { useCircle } from "./CircleLayout";
import { readSettings, SettingsFields } from "./SettingsFields";
import { keys } from "./types";

/** A circle's description and settings, and its deletion. */
export default function CircleSettingsPage() {
  const circle = useCircle();
  const client = useQueryClient();
  const navigate = useNavigate();
  const change = useMutation({
    mutationFn: (body: { description: string; settings: ReturnType<typeof readSettings> }) =>
      must(api.PATCH("/circles/{circle_id}", { params: { path: { circle_id: circle.id } }, body })),
    onSuccess: () => client.invalidateQueries({ queryKey: keys.circle(circle.id) }),
  });
  const remove = useMutation({
    mutationFn: () => must(api.DELETE("/circles/{circle_id}", { params: { path: { circle_id: circle.id } } })),
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: keys.circles });
      navigate("/circles");
    },
  });
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    change.mutate({ description: String(form.get("description") ?? ""), settings: readSettings(form, circle.settings) });
  }
  return (
    <section className="stack" aria-labelledby="settings">
      <h2 id="settings">Settings</h2>
      <form className="card stack" onSubmit={submit} aria-label="Circle settings" key={circle.updated_at}>
        <label>
          Description
          <input name="description" defaultValue={circle.description} maxLength={20000} />
        </label>
        <SettingsFields settings={circle.settings} />
        {change.error ? <ProblemView error={change.error} /> : null}
        {change.isSuccess ? <p className="ok">Saved.</p> : null}
        <div className="row">
          <button type="submit" className="primary" disabled={change.isPending}>
            Save
          </button>
        </div>
      </form>
      <div className="card stack">
        <h3>Delete</h3>
        <p className="muted">Deletes the circle, its tasks, conversations and workspace.</p>
        {remove.error ? <ProblemView error={remove.error} /> : null}
        <div className="row">
          <button
            type="button"
            disabled={remove.isPending}
            onClick={() => {
              if (confirm(`Delete the circle ${circle.name} and everything in it?`)) remove.mutate();
            }}
          >
            Delete {circle.name}
          </button>
        </div>
      </div>
    </section>
  );
}
