import { useMutation, useQueryClient } from "@tanstack/react-query";
import type { ReactNode } from "react";

import { api, must } from "../../api/client";
import type { components } from "../../api/schema";
import { ProblemView } from "../../components/ProblemView";

export type Schedule = components["schemas"]["ScheduleOut"];

type Verb = "pause" | "resume" | "trigger";

/** Pause or resume a schedule, and run it now. */
export function ScheduleControls({ schedule, compact, children }: { schedule: Schedule; compact?: boolean; children?: ReactNode }) {
  const client = useQueryClient();
  const act = useMutation({
    mutationFn: async (verb: Verb): Promise<unknown> => {
      const options = { params: { path: { schedule_id: schedule.id } } };
      if (verb === "pause") return must(api.POST("/schedules/{schedule_id}/pause", options));
      if (verb === "resume") return must(api.POST("/schedules/{schedule_id}/resume", options));
      return must(api.POST("/schedules/{schedule_id}/trigger", options));
    },
    onSuccess: () => client.invalidateQueries({ queryKey: ["schedules"] }),
  });
  const name = compact ? ` ${schedule.name}` : "";
  return (
    <div className="stack">
      <div className="row">
        {schedule.status === "active" ? (
          <button type="button" disabled={act.isPending} onClick={() => act.mutate("pause")} aria-label={`Pause${name}`}>
            Pause
          </button>
        ) : null}
        {schedule.status === "paused" ? (
          <button type="button" disabled={act.isPending} onClick={() => act.mutate("resume")} aria-label={`Resume${name}`}>
            Resume
          </button>
        ) : null}
        <button type="button" disabled={act.isPending} onClick={() => act.mutate("trigger")} aria-label={`Run${name} now`}>
          Run now
        </button>
        {children}
      </div>
      {act.error ? <ProblemView error={act.error} /> : null}
      {act.isSuccess && act.variables === "trigger" && !compact ? <p className="muted small">Run queued.</p> : null}
    </div>
  );
}
