import { useMutation, useQueryClient } from "@tanstack/react-query";

import { api, must } from "../../api/client";
import { ProblemView } from "../../components/ProblemView";
import { keys, type Circle } from "./types";

/** A circle's status and the lifecycle steps it may take: created -> active -> archived. */
export function CircleStatus({ circle }: { circle: Circle }) {
  const client = useQueryClient();
  const change = useMutation({
    mutationFn: (to: "activate" | "archive") => {
      const options = { params: { path: { circle_id: circle.id } } };
      return must(
        to === "activate"
          ? api.POST("/circles/{circle_id}/activate", options)
          : api.POST("/circles/{circle_id}/archive", options),
      );
    },
    onSettled: async () => {
      await client.invalidateQueries({ queryKey: keys.circles });
      await client.invalidateQueries({ queryKey: keys.circle(circle.id) });
    },
  });
  return (
    <div className="row">
      <span className={`badge status-${circle.status}`}>{circle.status}</span>
      {circle.status === "created" ? (
        <button
          type="button"
          aria-label={`Activate ${circle.name}`}
          disabled={change.isPending}
          onClick={() => change.mutate("activate")}
        >
          Activate
        </button>
      ) : null}
      {circle.status !== "archived" ? (
        <button
          type="button"
          aria-label={`Archive ${circle.name}`}
          disabled={change.isPending}
          onClick={() => {
            if (confirm(`Archive ${circle.name}? Its open tasks and conversations are cancelled; it never comes back.`)) {
              change.mutate("archive");
            }
          }}
        >
          Archive
        </button>
      ) : null}
      {change.error ? <ProblemView error={change.error} /> : null}
    </div>
  );
}
