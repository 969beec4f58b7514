import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";

import { api, must } from "../../api/client";
import type { components } from "../../api/schema";
import { useAuth } from "../../auth";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { useCircle } from "./CircleLayout";
import { formatLevels, parseLevels } from "./competencies";
import { keys, type Circle, type Conflict, type Member } from "./types";

type Role = "lead" | "member" | "reviewer";
type MemberIn = components["schemas"]["AgentMemberIn"] | components["schemas"]["PersonMemberIn"];
const ROLES: Role[] = ["member", "lead", "reviewer"];

function Levels({ levels }: { levels: Record<string, number> }) {
  const entries = Object.entries(levels);
  if (!entries.length) return <span className="muted">—</span>;
  return (
    <span className="row tight">
      {entries.map(([tag, level]) => (
        <span key={tag} className="badge">
          {tag} {level}
        </span>
      ))}
    </span>
  );
}

function AddMember({ circle }: { circle: Circle }) {
  const client = useQueryClient();
  const { singleUser } = useAuth();
  const [kind, setKind] = useState<"agent" | "person">("agent");
  const [invalid, setInvalid] = useState<string | null>(null);
  const agents = useQuery({ queryKey: ["agents"], queryFn: () => must(api.GET("/agents")) });
  const add = useMutation({
    mutationFn: (body: MemberIn) =>
      must(api.POST("/circles/{circle_id}/members", { params: { path: { circle_id: circle.id } }, body })),
    onSuccess: () => client.invalidateQueries({ queryKey: keys.circle(circle.id) }),
  });

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const competencies = parseLevels(String(form.get("competencies") ?? ""));
    if (typeof competencies === "string") {
      setInvalid(competencies);
      return;
    }
    setInvalid(null);
    const role = String(form.get("role")) as Role;
    const body: MemberIn =
      kind === "agent"
        ? { agent: String(form.get("agent")), role, competencies }
        : { user_id: Number(form.get("user_id")), role, competencies };
    add.mutate(body, { onSuccess: () => (event.target as HTMLFormElement).reset() });
  }

  return (
    <form className="card stack" onSubmit={submit} aria-label="Add a member">
      <h3>Add a member</h3>
      <div className="form-grid">
        {singleUser ? null : (
          <label>
            Who
            <select value={kind} onChange={(event) => setKind(event.target.value as "agent" | "person")}>
              <option value="agent">one of your agents</option>
              <option value="person">a person (their account id)</option>
            </select>
          </label>
        )}
        {kind === "agent" ? (
          <label>
            Agent
            <select name="agent" required defaultValue="">
              <option value="" disabled>
                {agents.data?.length ? "Choose an agent" : "No agent: create one under Agents"}
              </option>
              {(agents.data ?? []).map((agent) => (
                <option key={agent.id} value={agent.name}>
                  {agent.name}
                </option>
              ))}
            </select>
          </label>
        ) : (
          <label>
            Account id
            <input name="user_id" type="number" min={1} required />
          </label>
        )}
        <label>
          Role
          <select name="role" defaultValue="member">
            {ROLES.map((role) => (
              <option key={role} value={role}>
                {role}
              </option>
            ))}
          </select>
        </label>
        <label>
          Competencies (tag=level, 1 to 5)
          <input name="competencies" placeholder="python=4, code=3" />
        </label>
      </div>
      {agents.error ? <ProblemView error={agents.error} /> : null}
      {invalid ? <ProblemView error={new Error(invalid)} /> : null}
      {add.error ? <ProblemView error={add.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={add.isPending}>
          Add
        </button>
      </div>
    </form>
  );
}

function EditMember({ circle, member, onDone }: { circle: Circle; member: Member; onDone: () => void }) {
  const client = useQueryClient();
  const [invalid, setInvalid] = useState<string | null>(null);
  const change = useMutation({
    mutationFn: (body: { role: Role; competencies: Record<string, number> }) =>
      must(
        api.PATCH("/circles/{circle_id}/members/{member_id}", {
          params: { path: { circle_id: circle.id, member_id: member.id } },
          body,
        }),
      ),
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: keys.circle(circle.id) });
      onDone();
    },
  });
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const competencies = parseLevels(String(form.get("competencies") ?? ""));
    if (typeof competencies === "string") return setInvalid(competencies);
    setInvalid(null);
    change.mutate({ role: String(form.get("role")) as Role, competencies });
  }
  return (
    <form className="stack" onSubmit={submit} aria-label={`Change ${member.name}`}>
      <label>
        Role
        <select name="role" defaultValue={member.role}>
          {ROLES.map((role) => (
            <option key={role} value={role}>
              {role}
            </option>
          ))}
        </select>
      </label>
      <label>
        Competencies
        <input name="competencies" defaultValue={formatLevels(member.competencies)} />
      </label>
      {invalid ? <ProblemView error={new Error(invalid)} /> : null}
      {change.error ? <ProblemView error={change.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={change.isPending}>
          Save
        </button>
        <button type="button" onClick={onDone}>
          Close
        </button>
      </div>
    </form>
  );
}

function MemberRow({ circle, member }: { circle: Circle; member: Member }) {
  const client = useQueryClient();
  const [editing, setEditing] = useState(false);
  const setActive = useMutation({
    mutationFn: (active: boolean) =>
      must(
        api.PATCH("/circles/{circle_id}/members/{member_id}", {
          params: { path: { circle_id: circle.id, member_id: member.id } },
          body: { active },
        }),
      ),
    onSettled: () => client.invalidateQueries({ queryKey: keys.circle(circle.id) }),
  });
  return (
    <tr>
      <th scope="row">{member.name}</th>
      <td>{member.agent_id !== null ? "agent" : "person"}</td>
      <td>{member.role}</td>
      <td>
        <Levels levels={member.competencies} />
      </td>
      <td>{member.load}</td>
      <td>{member.gone ? <span className="bad">gone</span> : member.active ? "active" : <span className="muted">left</span>}</td>
      <td>
        {editing ? (
          <EditMember circle={circle} member={member} onDone={() => setEditing(false)} />
        ) : member.gone ? null : (
          <div className="row tight">
            <button type="button" aria-label={`Change ${member.name}`} onClick={() => setEditing(true)}>
              Change
            </button>
            <button
              type="button"
              aria-label={member.active ? `Remove ${member.name}` : `Bring back ${member.name}`}
              disabled={setActive.isPending}
              onClick={() => setActive.mutate(!member.active)}
            >
              {member.active ? "Remove" : "Bring back"}
            </button>
          </div>
        )}
        {setActive.error ? <ProblemView error={setActive.error} /> : null}
      </td>
    </tr>
  );
}

function MetricsTable({ circle }: { circle: Circle }) {
  const metrics = useQuery({
    queryKey: keys.metrics(circle.id),
    queryFn: () => must(api.GET("/circles/{circle_id}/metrics", { params: { path: { circle_id: circle.id } } })),
  });
  const percent = (value: number | null) => (value === null ? "—" : `${Math.round(value * 100)}%`);
  return (
    <section className="stack" aria-labelledby="metrics">
      <h2 id="metrics">Metrics</h2>
      {metrics.error ? <ProblemView error={metrics.error} /> : null}
      {metrics.data && !metrics.data.length ? <p className="muted">No member yet.</p> : null}
      {metrics.data?.length ? (
        <table>
          <thead>
            <tr>
              <th scope="col">Member</th>
              <th scope="col">Completed</th>
              <th scope="col">Failed</th>
              <th scope="col">Approval rate</th>
              <th scope="col">Review rounds</th>
              <th scope="col">Reviews given</th>
              <th scope="col">Tokens</th>
              <th scope="col">Work time</th>
              <th scope="col">Load</th>
            </tr>
          </thead>
          <tbody>
            {metrics.data.map((row) => (
              <tr key={row.member_id}>
                <th scope="row">
                  {row.name} <span className="muted">({row.role})</span>
                </th>
                <td>{row.completed}</td>
                <td>{row.failed}</td>
                <td>{percent(row.approval_rate)}</td>
                <td>{row.mean_review_rounds === null ? "—" : row.mean_review_rounds.toFixed(1)}</td>
                <td>{row.reviews_given}</td>
                <td>{row.tokens.toLocaleString()}</td>
                <td>{row.work_seconds.toFixed(1)} s</td>
                <td>{row.load}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </section>
  );
}

function conflictText(conflict: Conflict): string {
  const detail = conflict.detail as Record<string, unknown>;
  if (conflict.kind === "file" && Array.isArray(detail.paths)) {
    return `${detail.paths.join(", ")} held by task ${String(detail.holder_task_id)}`;
  }
  if (conflict.kind === "cycle" && Array.isArray(detail.cycle)) return `cycle ${detail.cycle.join(" → ")}`;
  if (conflict.kind === "disagreement" && detail.verdicts && typeof detail.verdicts === "object") {
    return Object.entries(detail.verdicts as Record<string, string>)
      .map(([member, verdict]) => `member ${member}: ${verdict}`)
      .join("; ");
  }
  return JSON.stringify(detail);
}

function Conflicts({ circle }: { circle: Circle }) {
  const [open, setOpen] = useState(false);
  const conflicts = useQuery({
    queryKey: keys.conflicts(circle.id, open),
    queryFn: () =>
      must(api.GET("/circles/{circle_id}/conflicts", { params: { path: { circle_id: circle.id }, query: { open } } })),
  });
  return (
    <section className="stack" aria-labelledby="conflicts">
      <h2 id="conflicts">Conflicts</h2>
      <label className="inline">
        <input type="checkbox" checked={open} onChange={(event) => setOpen(event.target.checked)} />
        Open ones only
      </label>
      {conflicts.error ? <ProblemView error={conflicts.error} /> : null}
      {conflicts.data && !conflicts.data.length ? <p className="muted">None.</p> : null}
      {conflicts.data?.length ? (
        <table>
          <thead>
            <tr>
              <th scope="col">Kind</th>
              <th scope="col">Tasks</th>
              <th scope="col">What</th>
              <th scope="col">Status</th>
              <th scope="col">When</th>
            </tr>
          </thead>
          <tbody>
            {conflicts.data.map((conflict) => (
              <tr key={conflict.id}>
                <td>{conflict.kind}</td>
                <td>
                  {[conflict.task_id, conflict.other_task_id]
                    .filter((id) => id !== null)
                    .map((id) => `#${String(id)}`)
                    .join(", ") || "—"}
                </td>
                <td>{conflictText(conflict)}</td>
                <td className={conflict.status === "open" ? "warn" : "muted"}>
                  {conflict.status}
                  {conflict.resolution ? `: ${conflict.resolution}` : ""}
                </td>
                <td>{when(conflict.created_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </section>
  );
}

/** The circle's page: its members with their competencies, their metrics, its conflicts. */
export default function CircleMembers() {
  const circle = useCircle();
  const members = useQuery({
    queryKey: keys.members(circle.id),
    queryFn: () => must(api.GET("/circles/{circle_id}/members", { params: { path: { circle_id: circle.id } } })),
  });
  return (
    <div className="stack">
      <section className="stack" aria-labelledby="members">
        <h2 id="members">Members</h2>
        {members.isPending ? <p aria-busy="true">Loading…</p> : null}
        {members.error ? <ProblemView error={members.error} /> : null}
        {members.data && !members.data.length ? <p className="muted">No member yet: add one.</p> : null}
        {members.data?.length ? (
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Kind</th>
                <th scope="col">Role</th>
                <th scope="col">Competencies</th>
                <th scope="col">Load</th>
                <th scope="col">State</th>
                <th scope="col">
                  <span className="muted">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {members.data.map((member) => (
                <MemberRow key={member.id} circle={circle} member={member} />
              ))}
            </tbody>
          </table>
        ) : null}
        {circle.status !== "archived" ? <AddMember circle={circle} /> : null}
      </section>
      <MetricsTable circle={circle} />
      <Conflicts circle={circle} />
    </div>
  );
}
