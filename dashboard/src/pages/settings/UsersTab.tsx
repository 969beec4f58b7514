// Users and roles (multi-user servers): list, create, change a role, disable and enable.

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";

import { api, must } from "../../api/client";
import type { components } from "../../api/schema";
import { useAuth } from "../../auth";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";

type User = components["schemas"]["UserResponse"];
type Role = User["role"];
type Change = components["schemas"]["UserChangeResponse"];

const ROLES: { value: Role; label: string }[] = [
  { value: "admin", label: "admin" },
  { value: "member", label: "member" },
  { value: "viewer", label: "viewer (read-only)" },
];

function changed(change: Change): string {
  const parts = [`${change.user.email} is now ${change.user.is_active ? change.user.role : "disabled"}`];
  if (change.sessions_revoked) parts.push(`${change.sessions_revoked} session(s) ended`);
  if (change.api_keys_revoked) parts.push(`${change.api_keys_revoked} API key(s) revoked`);
  return parts.join("; ") + ".";
}

function CreateUser({ onDone }: { onDone: () => void }) {
  const client = useQueryClient();
  const create = useMutation({
    mutationFn: (body: components["schemas"]["UserCreateRequest"]) => must(api.POST("/users", { body })),
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: ["users"] });
      onDone();
    },
  });
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    create.mutate({
      email: String(form.get("email")).trim(),
      password: String(form.get("password")),
      role: String(form.get("role")) as Role,
    });
  }
  return (
    <form className="card stack" onSubmit={submit} aria-label="New user">
      <h3>New user</h3>
      <div className="form-grid">
        <label>
          Email
          <input name="email" type="email" required maxLength={254} autoComplete="off" />
        </label>
        <label>
          Password (12 characters or more)
          <input name="password" type="password" required minLength={12} maxLength={1024} autoComplete="new-password" />
        </label>
        <label>
          Role
          <select name="role" defaultValue="member">
            {ROLES.map((role) => (
              <option key={role.value} value={role.value}>
                {role.label}
              </option>
            ))}
          </select>
        </label>
      </div>
      {create.error ? <ProblemView error={create.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={create.isPending}>
          Create user
        </button>
        <button type="button" onClick={onDone}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function UserRow({ user, self, onChanged }: { user: User; self: boolean; onChanged: (change: Change) => void }) {
  const client = useQueryClient();
  const done = async (change: Change) => {
    await client.invalidateQueries({ queryKey: ["users"] });
    onChanged(change);
  };
  const role = useMutation({
    mutationFn: (next: Role) => must(api.PUT("/users/{user_id}/role", { params: { path: { user_id: user.id } }, body: { role: next } })),
    onSuccess: done,
  });
  const active = useMutation({
    mutationFn: () =>
      must(
        user.is_active
          ? api.POST("/users/{user_id}/disable", { params: { path: { user_id: user.id } } })
          : api.POST("/users/{user_id}/enable", { params: { path: { user_id: user.id } } }),
      ),
    onSuccess: done,
  });
  return (
    <tr>
      <th scope="row">
        {user.email} {self ? <span className="badge">you</span> : null}
      </th>
      <td>
        <select
          value={user.role}
          aria-label={`Role of ${user.email}`}
          disabled={role.isPending}
          onChange={(event) => role.mutate(event.target.value as Role)}
        >
          {ROLES.map((r) => (
            <option key={r.value} value={r.value}>
              {r.label}
            </option>
          ))}
        </select>
        {role.error ? <ProblemView error={role.error} /> : null}
      </td>
      <td>{user.is_active ? <span className="ok">active</span> : <span className="bad">disabled</span>}</td>
      <td>{when(user.created_at)}</td>
      <td>{when(user.last_login_at)}</td>
      <td className="actions">
        <button
          type="button"
          disabled={active.isPending}
          aria-label={`${user.is_active ? "Disable" : "Enable"} ${user.email}`}
          onClick={() => {
            if (!user.is_active || confirm(`Disable ${user.email}? Their sessions end and their API keys are revoked.`)) active.mutate();
          }}
        >
          {user.is_active ? "Disable" : "Enable"}
        </button>
        {active.error ? <ProblemView error={active.error} /> : null}
      </td>
    </tr>
  );
}

function UserList() {
  const { me } = useAuth();
  const users = useQuery({ queryKey: ["users"], queryFn: () => must(api.GET("/users")) });
  const [creating, setCreating] = useState(false);
  const [notice, setNotice] = useState<string | null>(null);
  return (
    <>
      {creating ? (
        <CreateUser onDone={() => setCreating(false)} />
      ) : (
        <div>
          <button type="button" className="primary" onClick={() => setCreating(true)}>
            New user
          </button>
        </div>
      )}
      <p role="status" className="muted">
        {notice}
      </p>
      {users.isPending ? <p aria-busy="true">Loading…</p> : null}
      {users.error ? <ProblemView error={users.error} /> : null}
      {users.data?.length ? (
        <div className="table-scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Email</th>
                <th scope="col">Role</th>
                <th scope="col">State</th>
                <th scope="col">Created</th>
                <th scope="col">Last sign-in</th>
                <th scope="col">
                  <span className="muted">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {users.data.map((user) => (
                <UserRow key={user.id} user={user} self={user.id === me.id} onChanged={(change) => setNotice(changed(change))} />
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </>
  );
}

export default function UsersTab() {
  const { singleUser } = useAuth();
  return (
    <section className="stack" aria-labelledby="users-heading">
      <h2 id="users-heading">Users and roles</h2>
      {singleUser ? (
        <p>
          Accounts are off: this server runs in single-user mode, where every request acts as its owner. Start it with{" "}
          <code>GATHERING_AUTH=required</code> to have accounts and roles.
        </p>
      ) : (
        <UserList />
      )}
    </section>
  );
}
