import { useQuery } from "@tanstack/react-query";
import { Link, NavLink, Outlet, useOutletContext, useParams } from "react-router-dom";

import { api, must } from "../../api/client";
import { ProblemView } from "../../components/ProblemView";
import { CircleStatus } from "./CircleStatus";
import { CircleLiveProvider, useLiveState } from "./live";
import { keys, type Circle } from "./types";
import "./circles.css";

const LIVE_LABEL = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", refused: "Not live" };

function LiveBadge() {
  const state = useLiveState();
  return (
    <span role="status" className={`badge ${state === "live" ? "ok" : state === "refused" ? "bad" : "warn"}`}>
      {LIVE_LABEL[state]}
    </span>
  );
}

/** The circle the page is about (from the layout). */
export function useCircle(): Circle {
  return useOutletContext<Circle>();
}

/** A circle's pages: its header, a navigation between them, and one live subscription. */
export default function CircleLayout() {
  const params = useParams();
  const circleId = Number(params.circleId);
  const circle = useQuery({
    queryKey: keys.circle(circleId),
    queryFn: () => must(api.GET("/circles/{circle_id}", { params: { path: { circle_id: circleId } } })),
    enabled: Number.isInteger(circleId),
  });
  if (!Number.isInteger(circleId)) return <ProblemView error={new Error(`no circle ${params.circleId ?? ""}`)} />;
  if (circle.isPending) return <p aria-busy="true">Loading…</p>;
  if (circle.error) {
    return (
      <section className="stack">
        <h1>Circle</h1>
        <ProblemView error={circle.error} />
        <Link to="/circles">All circles</Link>
      </section>
    );
  }
  const found = circle.data;
  const base = `/circles/${found.id}`;
  return (
    <CircleLiveProvider circle={found}>
      <section className="stack">
        <div className="row circle-head">
          <h1>{found.name}</h1>
          <CircleStatus circle={found} />
          <LiveBadge />
        </div>
        {found.description ? <p className="muted">{found.description}</p> : null}
        <nav aria-label="Circle" className="circle-tabs">
          <NavLink to={base} end>
            Members
          </NavLink>
          <NavLink to={`${base}/board`}>Task board</NavLink>
          <NavLink to={`${base}/conversations`}>Conversations</NavLink>
          <NavLink to={`${base}/settings`}>Settings</NavLink>
        </nav>
        <Outlet context={found} />
      </section>
    </CircleLiveProvider>
  );
}
