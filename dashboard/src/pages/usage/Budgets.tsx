// Budgets: what each one allows per period, what was spent and is held, when it resets; admins
// set (create or change) and remove them.

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";

import { api, must } from "../../api/client";
import type { components } from "../../api/schema";
import { useAuth } from "../../auth";
import { ProblemView } from "../../components/ProblemView";
import { money, when } from "../../format";

type Budget = components["schemas"]["BudgetOut"];
type BudgetIn = Extract<components["schemas"]["BudgetIn"], { scope: unknown }>;
type Scope = BudgetIn["scope"];

const SCOPES: Scope[] = ["user", "agent", "circle", "pipeline", "task"];
const PERIODS: { value: BudgetIn["period"]; label: string }[] = [
  { value: "day", label: "per day (UTC)" },
  { value: "month", label: "per month (UTC)" },
  { value: "total", label: "in total" },
];
const count = new Intl.NumberFormat();

/** Names for budget targets: agents for everyone, users for admins of a multi-user server. */
function useTargetNames() {
  const { me, singleUser } = useAuth();
  const agents = useQuery({ queryKey: ["agents"], queryFn: () => must(api.GET("/agents")) });
  const users = useQuery({
    queryKey: ["users"],
    queryFn: () => must(api.GET("/users")),
    enabled: me.is_admin && !singleUser,
  });
  return {
    agents: agents.data ?? [],
    users: users.data ?? [],
    name(scope: string, id: number): string {
      if (scope === "agent") {
        const agent = agents.data?.find((a) => a.id === id);
        if (agent) return `agent ${agent.name}`;
      }
      if (scope === "user") {
        if (id === me.id) return singleUser ? "user (you)" : `user ${me.email}`;
        const user = users.data?.find((u) => u.id === id);
        if (user) return `user ${user.email}`;
      }
      return `${scope} #${id}`;
    },
  };
}

function Spent({ spent, limit, text }: { spent: number; limit: number | null; text: (n: number) => string }) {
  if (limit === null) return <span className="muted">no limit</span>;
  const share = limit > 0 ? spent / limit : 0;
  return (
    <span className="spent">
      <span className={share >= 1 ? "bad" : share >= 0.8 ? "warn" : undefined}>
        {text(spent)} of {text(limit)}
      </span>
      <meter min={0} max={limit} value={Math.min(spent, limit)} low={limit * 0.8} high={limit * 0.99} optimum={0} aria-label={`${text(spent)} of ${text(limit)} spent`} />
    </span>
  );
}

function numberOrNull(value: FormDataEntryValue | null): number | null {
  const text = String(value ?? "").trim();
  return text === "" ? null : Number(text);
}

function TargetField({ scope, defaultValue }: { scope: Scope; defaultValue?: number }) {
  const names = useTargetNames();
  const { me, singleUser } = useAuth();
  if (scope === "agent" && names.agents.length) {
    return (
      <label>
        Agent
        <select name="target_id" defaultValue={defaultValue} required>
          {names.agents.map((agent) => (
            <option key={agent.id} value={agent.id}>
              {agent.name} (#{agent.id})
            </option>
          ))}
        </select>
      </label>
    );
  }
  if (scope === "user") {
    const users = singleUser ? [{ id: me.id, email: "you (the local owner)" }] : names.users;
    if (users.length) {
      return (
        <label>
          User
          <select name="target_id" defaultValue={defaultValue} required>
            {users.map((user) => (
              <option key={user.id} value={user.id}>
                {user.email}
              </option>
            ))}
          </select>
        </label>
      );
    }
  }
  return (
    <label>
      {scope[0]?.toUpperCase() + scope.slice(1)} id
      <input name="target_id" type="number" min={1} step={1} required defaultValue={defaultValue} />
    </label>
  );
}

function BudgetForm({ budget, onDone }: { budget?: Budget; onDone: () => void }) {
  const client = useQueryClient();
  const names = useTargetNames();
  const [scope, setScope] = useState<Scope>((budget?.scope as Scope | undefined) ?? "agent");
  const save = useMutation({
    mutationFn: (body: BudgetIn) => must(api.PUT("/budgets", { body })),
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: ["budgets"] });
      onDone();
    },
  });

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    save.mutate({
      scope: budget ? (budget.scope as Scope) : scope,
      target_id: budget ? budget.target_id : Number(form.get("target_id")),
      period: budget ? (budget.period as BudgetIn["period"]) : (String(form.get("period")) as BudgetIn["period"]),
      limit_usd: numberOrNull(form.get("limit_usd")),
      limit_tokens: numberOrNull(form.get("limit_tokens")),
      warn_percent: numberOrNull(form.get("warn_percent")) ?? 80,
    });
  }

  const title = budget ? `Change the budget of ${names.name(budget.scope, budget.target_id)}` : "New budget";
  return (
    <form className="card stack" onSubmit={submit} aria-label={title}>
      <h3>{title}</h3>
      {budget ? (
        <p className="muted">{PERIODS.find((p) => p.value === budget.period)?.label ?? budget.period}</p>
      ) : (
        <div className="form-grid">
          <label>
            Applies to
            <select value={scope} onChange={(event) => setScope(event.target.value as Scope)}>
              {SCOPES.map((s) => (
                <option key={s} value={s}>
                  {s}
                </option>
              ))}
            </select>
          </label>
          <TargetField key={scope} scope={scope} />
          <label>
            Period
            <select name="period" defaultValue="month">
              {PERIODS.map((p) => (
                <option key={p.value} value={p.value}>
                  {p.label}
                </option>
              ))}
            </select>
          </label>
        </div>
      )}
      <div className="form-grid">
        <label>
          Limit in USD
          <input name="limit_usd" type="number" min={0.000001} step="any" defaultValue={budget?.limit_usd ?? undefined} />
        </label>
        <label>
          Limit in tokens
          <input name="limit_tokens" type="number" min={1} step={1} defaultValue={budget?.limit_tokens ?? undefined} />
        </label>
        <label>
          Warn at (%)
          <input name="warn_percent" type="number" min={1} max={100} step={1} defaultValue={budget?.warn_percent ?? 80} />
        </label>
      </div>
      <p className="muted">Give a limit in dollars, in tokens, or both.</p>
      {save.error ? <ProblemView error={save.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={save.isPending}>
          {budget ? "Save" : "Create budget"}
        </button>
        <button type="button" onClick={onDone}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function BudgetRow({ budget, onEdit }: { budget: Budget; onEdit: () => void }) {
  const client = useQueryClient();
  const { me } = useAuth();
  const names = useTargetNames();
  const name = names.name(budget.scope, budget.target_id);
  const remove = useMutation({
    mutationFn: () => must(api.DELETE("/budgets/{budget_id}", { params: { path: { budget_id: budget.id } } })),
    onSuccess: () => client.invalidateQueries({ queryKey: ["budgets"] }),
  });
  return (
    <tr>
      <th scope="row">{name}</th>
      <td>{PERIODS.find((p) => p.value === budget.period)?.label ?? budget.period}</td>
      <td>
        <Spent spent={budget.spent_usd} limit={budget.limit_usd} text={money} />
        {budget.reserved_usd ? <div className="muted">{money(budget.reserved_usd)} held</div> : null}
      </td>
      <td>
        <Spent spent={budget.spent_tokens} limit={budget.limit_tokens} text={(n) => count.format(n)} />
        {budget.reserved_tokens ? <div className="muted">{count.format(budget.reserved_tokens)} held</div> : null}
      </td>
      <td>{budget.warn_percent}%</td>
      <td>{budget.resets_at ? when(budget.resets_at) : <span className="muted">never</span>}</td>
      {me.is_admin ? (
        <td>
          <div className="row">
            <button type="button" onClick={onEdit} aria-label={`Change the budget of ${name}`}>
              Change
            </button>
            <button
              type="button"
              aria-label={`Remove the budget of ${name}`}
              disabled={remove.isPending}
              onClick={() => {
                if (confirm(`Remove the budget of ${name}?`)) remove.mutate();
              }}
            >
              Remove
            </button>
          </div>
          {remove.error ? <ProblemView error={remove.error} /> : null}
        </td>
      ) : null}
    </tr>
  );
}

export function Budgets() {
  const { me } = useAuth();
  const budgets = useQuery({ queryKey: ["budgets"], queryFn: () => must(api.GET("/budgets")), refetchInterval: 60_000 });
  const [editing, setEditing] = useState<Budget | "new" | null>(null);
  return (
    <section className="stack" aria-labelledby="budgets-heading">
      <h2 id="budgets-heading">Budgets</h2>
      {me.is_admin && editing === null ? (
        <div>
          <button type="button" className="primary" onClick={() => setEditing("new")}>
            New budget
          </button>
        </div>
      ) : null}
      {editing !== null ? (
        <BudgetForm key={editing === "new" ? "new" : editing.id} budget={editing === "new" ? undefined : editing} onDone={() => setEditing(null)} />
      ) : null}
      {budgets.isPending ? <p aria-busy="true">Loading…</p> : null}
      {budgets.error ? <ProblemView error={budgets.error} /> : null}
      {budgets.data && !budgets.data.length ? <p className="muted">No budget: spending is not capped.</p> : null}
      {budgets.data?.length ? (
        <div className="table-scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Budget</th>
                <th scope="col">Period</th>
                <th scope="col">Dollars</th>
                <th scope="col">Tokens</th>
                <th scope="col">Warns at</th>
                <th scope="col">Resets</th>
                {me.is_admin ? (
                  <th scope="col">
                    <span className="muted">Actions</span>
                  </th>
                ) : null}
              </tr>
            </thead>
            <tbody>
              {budgets.data.map((budget) => (
                <BudgetRow key={budget.id} budget={budget} onEdit={() => setEditing(budget)} />
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}
