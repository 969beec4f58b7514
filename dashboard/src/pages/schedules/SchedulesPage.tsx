import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { Link, useNavigate } from "react-router-dom";

import { useLive } from "../../api/live";
import { api, must } from "../../api/client";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { tone } from "../tasks/shared";
import { emptyDraft, type ScheduleIn } from "./draft";
import { ScheduleControls } from "./ScheduleControls";
import { ScheduleForm } from "./ScheduleForm";
import { describeTiming } from "./timing";
import "./schedules.css";

function NewSchedule() {
  const client = useQueryClient();
  const navigate = useNavigate();
  const [open, setOpen] = useState(false);
  const create = useMutation({
    mutationFn: (body: ScheduleIn) => must(api.POST("/schedules", { body })),
    onSuccess: async (schedule) => {
      await client.invalidateQueries({ queryKey: ["schedules"] });
      navigate(`/schedules/${schedule.id}`);
    },
  });
  if (!open) {
    return (
      <div>
        <button type="button" className="primary" onClick={() => setOpen(true)}>
          New schedule
        </button>
      </div>
    );
  }
  return (
    <ScheduleForm
      initial={emptyDraft()}
      label="New schedule"
      submitLabel="Create"
      pending={create.isPending}
      error={create.error}
      onSubmit={(body) => create.mutate(body)}
      onCancel={() => setOpen(false)}
    />
  );
}

export default function SchedulesPage() {
  const client = useQueryClient();
  const schedules = useQuery({
    queryKey: ["schedules", "list"],
    queryFn: () => must(api.GET("/schedules", { params: { query: { limit: 200 } } })),
  });
  const subjects = (schedules.data ?? []).slice(0, 50).map((schedule) => `schedule:${schedule.id}`);
  const live = useLive({
    patterns: ["schedule_run.*"],
    subjects,
    onEvent: () => void client.invalidateQueries({ queryKey: ["schedules"] }),
  });
  return (
    <section className="stack">
      <h1>Schedules</h1>
      <NewSchedule />
      {schedules.isPending ? <p aria-busy="true">Loading…</p> : null}
      {schedules.error ? <ProblemView error={schedules.error} /> : null}
      {schedules.data && !schedules.data.length ? <p className="muted">No schedule yet.</p> : null}
      {schedules.data?.length ? (
        <table aria-label="Schedules">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">When</th>
              <th scope="col">Action</th>
              <th scope="col">State</th>
              <th scope="col">Next run</th>
              <th scope="col">Runs</th>
              <th scope="col">
                <span className="muted">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {schedules.data.map((schedule) => (
              <tr key={schedule.id}>
                <td>
                  <Link to={`/schedules/${schedule.id}`}>{schedule.name}</Link>
                </td>
                <td>{describeTiming(schedule.spec)}</td>
                <td>
                  <code>{String(schedule.spec.action)}</code>
                </td>
                <td>
                  <span className={`badge ${tone(schedule.status)}`}>{schedule.status}</span>
                </td>
                <td>{when(schedule.next_run_at)}</td>
                <td>{schedule.executions}</td>
                <td>
                  <ScheduleControls schedule={schedule} compact />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {subjects.length ? (
        <p className="muted small">{live === "live" ? "Runs update live." : `Live updates: ${live}…`}</p>
      ) : null}
    </section>
  );
}
