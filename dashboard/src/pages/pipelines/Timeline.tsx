// When each node ran: a bar per node from its start to its end (to now while it runs), on
// one time scale from the run's start.

import { seconds } from "../../format";
import type { NodeRun, Run } from "./queries";

export function Timeline({ run, now }: { run: Run; now: number }) {
  const nodes = (run.nodes ?? []).filter((node) => node.started_at);
  if (!nodes.length) return <p className="muted">No node has started yet.</p>;
  const start = Math.min(Date.parse(run.created_at), ...nodes.map((node) => Date.parse(node.started_at ?? "")));
  const endOf = (node: NodeRun) => (node.finished_at ? Date.parse(node.finished_at) : now);
  const end = Math.max(start + 1, ...nodes.map(endOf), run.finished_at ? Date.parse(run.finished_at) : 0);
  const total = end - start;
  const ordered = [...nodes].sort((a, b) => Date.parse(a.started_at ?? "") - Date.parse(b.started_at ?? ""));
  return (
    <div className="stack">
      <ol className="timeline" aria-label="Timeline of the nodes">
        {ordered.map((node) => {
          const from = Date.parse(node.started_at ?? "") - start;
          const took = endOf(node) - Date.parse(node.started_at ?? "");
          return (
            <li key={node.node_id}>
              <span className="timeline-name">{node.node_id}</span>
              <span className="timeline-track" aria-hidden="true">
                <span
                  className={`timeline-bar status-${node.status}`}
                  style={{ left: `${(from / total) * 100}%`, width: `max(2px, ${(took / total) * 100}%)` }}
                />
              </span>
              <span className="timeline-time">
                {seconds(took)}
                {node.finished_at ? "" : " so far"} · {node.status}
              </span>
            </li>
          );
        })}
      </ol>
      <p className="muted">Scale: {seconds(total)} from the run&apos;s start.</p>
    </div>
  );
}
