// The audit log: search by who, what, on what, when and how it went; newest first, a page at a
// time (older pages by `before_id`).

import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";

import { api, must } from "../../api/client";
import type { components } from "../../api/schema";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { auditQuery, type AuditQuery } from "./forms";

type Entry = components["schemas"]["AuditEntry"];

const EVENTS = [
  "auth.*",
  "auth.login",
  "user.*",
  "user.created",
  "user.role_changed",
  "user.disabled",
  "api_key.*",
  "api_key.created",
  "api_key.revoked",
  "session.revoked",
  "permission.denied",
  "provider.*",
  "model.*",
  "budget.*",
  "setting.*",
];
const SIZES = [50, 100, 200, 500];

function Filters({ onSearch }: { onSearch: (query: AuditQuery) => void }) {
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    onSearch(auditQuery(new FormData(event.currentTarget)));
  }
  return (
    <form className="card stack" onSubmit={submit} aria-label="Search the audit log">
      <div className="filters">
        <label>
          <span>
            Event (or family: <code>user.*</code>)
          </span>
          <input name="event" list="audit-events" maxLength={100} autoComplete="off" />
          <datalist id="audit-events">
            {EVENTS.map((event) => (
              <option key={event} value={event} />
            ))}
          </datalist>
        </label>
        <label>
          Outcome
          <select name="outcome" defaultValue="">
            <option value="">any</option>
            <option value="success">success</option>
            <option value="failure">failure</option>
            <option value="denied">denied</option>
          </select>
        </label>
        <label>
          Actor (user id)
          <input name="actor_id" type="number" min={1} step={1} />
        </label>
        <label>
          Subject (email or cli)
          <input name="subject" maxLength={254} autoComplete="off" />
        </label>
        <label>
          Target type
          <input name="target_type" list="audit-targets" maxLength={50} autoComplete="off" />
          <datalist id="audit-targets">
            {["user", "api_key", "session", "provider", "model", "budget", "setting"].map((t) => (
              <option key={t} value={t} />
            ))}
          </datalist>
        </label>
        <label>
          Target id
          <input name="target_id" maxLength={128} autoComplete="off" />
        </label>
        <label>
          IP address
          <input name="ip" maxLength={100} autoComplete="off" />
        </label>
        <label>
          Request id
          <input name="request_id" maxLength={128} autoComplete="off" />
        </label>
        <label>
          Since
          <input name="since" type="datetime-local" />
        </label>
        <label>
          Until
          <input name="until" type="datetime-local" />
        </label>
      </div>
      <div className="row">
        <button type="submit" className="primary">
          Search
        </button>
        <button type="reset" onClick={() => onSearch({})}>
          Clear
        </button>
      </div>
    </form>
  );
}

function Target({ entry }: { entry: Entry }) {
  if (!entry.target_type) return <span className="muted">—</span>;
  return (
    <>
      {entry.target_type}
      {entry.target_id ? ` ${entry.target_id}` : ""}
    </>
  );
}

function EntryRow({ entry }: { entry: Entry }) {
  const details = Object.keys(entry.details).length ? JSON.stringify(entry.details, null, 2) : null;
  return (
    <tr>
      <td>
        <time dateTime={entry.occurred_at}>{when(entry.occurred_at)}</time>
      </td>
      <th scope="row">
        <code>{entry.event}</code>
      </th>
      <td className={entry.outcome === "success" ? "ok" : "bad"}>{entry.outcome}</td>
      <td>
        {entry.actor_id ?? <span className="muted">—</span>}
        {entry.subject ? <div className="muted">{entry.subject}</div> : null}
      </td>
      <td>
        <Target entry={entry} />
      </td>
      <td>
        {entry.ip ?? "—"}
        {entry.request_id ? <div className="muted">{entry.request_id}</div> : null}
      </td>
      <td className="audit-details">
        {details ? (
          <details>
            <summary>Details</summary>
            <pre>{details}</pre>
          </details>
        ) : (
          <span className="muted">—</span>
        )}
      </td>
    </tr>
  );
}

export default function AuditTab() {
  const [query, setQuery] = useState<AuditQuery>({});
  const [limit, setLimit] = useState(100);
  // The `before_id` of each page shown so far: the last is the current page.
  const [pages, setPages] = useState<(number | undefined)[]>([undefined]);
  const before = pages[pages.length - 1];
  const entries = useQuery({
    queryKey: ["audit", query, limit, before],
    queryFn: () =>
      must(
        api.GET("/audit", {
          params: {
            query: {
              ...query,
              actor_id: query.actor_id ? Number(query.actor_id) : undefined,
              outcome: query.outcome as "success" | "failure" | "denied" | undefined,
              before_id: before,
              limit,
            },
          },
        }),
      ),
    placeholderData: keepPreviousData,
  });
  const rows = entries.data ?? [];
  const last = rows[rows.length - 1];
  return (
    <section className="stack" aria-labelledby="audit-heading">
      <h2 id="audit-heading">Audit log</h2>
      <Filters
        onSearch={(next) => {
          setQuery(next);
          setPages([undefined]);
        }}
      />
      {entries.error ? <ProblemView error={entries.error} /> : null}
      <div className="row">
        <label className="inline">
          Per page
          <select
            value={limit}
            onChange={(event) => {
              setLimit(Number(event.target.value));
              setPages([undefined]);
            }}
          >
            {SIZES.map((size) => (
              <option key={size} value={size}>
                {size}
              </option>
            ))}
          </select>
        </label>
        <span className="muted" aria-live="polite">
          {entries.isFetching ? "Searching…" : `Page ${pages.length}: ${rows.length} entr${rows.length === 1 ? "y" : "ies"}, newest first`}
        </span>
      </div>
      {entries.data && !rows.length ? <p className="muted">No entry matches.</p> : null}
      {rows.length ? (
        <div className="table-scroll">
          <table aria-label="Audit entries">
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col">Event</th>
                <th scope="col">Outcome</th>
                <th scope="col">Actor</th>
                <th scope="col">Target</th>
                <th scope="col">From</th>
                <th scope="col">Details</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((entry) => (
                <EntryRow key={entry.id} entry={entry} />
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      <nav className="row" aria-label="Audit pages">
        <button type="button" disabled={pages.length === 1} onClick={() => setPages((p) => p.slice(0, -1))}>
          Newer
        </button>
        <button type="button" disabled={!last || rows.length < limit} onClick={() => last && setPages((p) => [...p, last.id])}>
          Older
        </button>
      </nav>
    </section>
  );
}
