import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";

import { api, must } from "../../api/client";
import { useLive } from "../../api/live";
import type { components } from "../../api/schema";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";

type Approval = components["schemas"]["ApprovalOut"];
type ApprovalState = Approval["state"];

function Decide({ approval }: { approval: Approval }) {
  const client = useQueryClient();
  const [comment, setComment] = useState("");
  const decide = useMutation({
    mutationFn: (verdict: "approve" | "deny") => {
      const options = { params: { path: { approval_id: approval.id } }, body: comment ? { comment } : null };
      return must(
        verdict === "approve"
          ? api.POST("/approvals/{approval_id}/approve", options)
          : api.POST("/approvals/{approval_id}/deny", options),
      );
    },
    onSuccess: () => client.invalidateQueries({ queryKey: ["approvals"] }),
  });
  return (
    <div className="stack">
      <label>
        <span className="muted">Comment (optional)</span>
        <input value={comment} onChange={(event) => setComment(event.target.value)} maxLength={2000} />
      </label>
      <div className="row">
        <button type="button" className="primary" disabled={decide.isPending} onClick={() => decide.mutate("approve")}>
          Approve
        </button>
        <button type="button" disabled={decide.isPending} onClick={() => decide.mutate("deny")}>
          Deny
        </button>
      </div>
      {decide.error ? <ProblemView error={decide.error} /> : null}
    </div>
  );
}

export default function ApprovalsPage() {
  const client = useQueryClient();
  const [state, setState] = useState<ApprovalState>("pending");
  const approvals = useQuery({
    queryKey: ["approvals", state],
    queryFn: () => must(api.GET("/approvals", { params: { query: { state, limit: 100 } } })),
  });
  useLive({
    patterns: ["approval.*"],
    onEvent: () => void client.invalidateQueries({ queryKey: ["approvals"] }),
  });
  return (
    <section className="stack">
      <h1>Approvals</h1>
      <label className="row">
        Show
        <select value={state} onChange={(event) => setState(event.target.value as ApprovalState)}>
          <option value="pending">waiting for a decision</option>
          <option value="approved">approved</option>
          <option value="denied">denied</option>
          <option value="expired">expired</option>
        </select>
      </label>
      {approvals.isPending ? <p aria-busy="true">Loading…</p> : null}
      {approvals.error ? <ProblemView error={approvals.error} /> : null}
      {approvals.data && !approvals.data.length ? <p className="muted">None.</p> : null}
      {approvals.data?.map((approval) => (
        <article key={approval.id} className="card stack" aria-label={`Approval ${approval.id}`}>
          <div className="row">
            <strong>
              <code>{approval.tool_name}</code>
            </strong>
            <span className="badge">{approval.effect}</span>
            <span className="muted">
              agent {approval.agent_id} · asked by {approval.requested_by} · {when(approval.requested_at)}
            </span>
          </div>
          {approval.reason ? <p>{approval.reason}</p> : null}
          <pre>{JSON.stringify(approval.arguments, null, 2)}</pre>
          {approval.state === "pending" ? (
            <Decide approval={approval} />
          ) : (
            <p className="muted">
              {approval.state} {approval.decided_at ? when(approval.decided_at) : ""}
              {approval.comment ? ` — “${approval.comment}”` : ""}
            </p>
          )}
        </article>
      ))}
    </section>
  );
}
