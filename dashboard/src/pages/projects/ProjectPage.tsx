import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useRef, useState, type KeyboardEvent } from "react";
import { Link, useParams } from "react-router-dom";

import { api, must } from "../../api/client";
import { useLive, type LiveEvent } from "../../api/live";
import { ProblemView } from "../../components/ProblemView";
import { AgentPanel } from "./AgentPanel";
import { EditorPane, type PaneHandle } from "./EditorPane";
import { FileTree, type Selected } from "./FileTree";
import { GitPanel } from "./GitPanel";
import { changesOf, foldersToRefresh } from "./paths";
import { TerminalPanel } from "./TerminalPanel";
import { keys } from "./workspace";
import "./projects.css";

const TABS = ["Git", "Terminal", "Agent"] as const;
type Tab = (typeof TABS)[number];

function Tabs({ tab, onChange, allowed }: { tab: Tab; onChange: (tab: Tab) => void; allowed: (tab: Tab) => boolean }) {
  const shown = TABS.filter(allowed);
  function arrows(event: KeyboardEvent<HTMLButtonElement>) {
    const at = shown.indexOf(tab);
    const step = event.key === "ArrowRight" ? 1 : event.key === "ArrowLeft" ? -1 : 0;
    if (!step) return;
    event.preventDefault();
    const next = shown[(at + step + shown.length) % shown.length];
    if (next) {
      onChange(next);
      document.getElementById(`tab-${next}`)?.focus();
    }
  }
  return (
    <div role="tablist" aria-label="Tools" className="tabs">
      {shown.map((name) => (
        <button
          key={name}
          id={`tab-${name}`}
          type="button"
          role="tab"
          aria-selected={tab === name}
          aria-controls={`panel-${name}`}
          tabIndex={tab === name ? 0 : -1}
          onClick={() => onChange(name)}
          onKeyDown={arrows}
        >
          {name}
        </button>
      ))}
    </div>
  );
}

export default function ProjectPage() {
  const projectId = Number(useParams().projectId);
  const client = useQueryClient();
  const project = useQuery({
    queryKey: keys.project(projectId),
    queryFn: () => must(api.GET("/projects/{project_id}", { params: { path: { project_id: projectId } } })),
  });
  const pane = useRef<PaneHandle>(null);
  const [openPath, setOpenPath] = useState<string | null>(null);
  const [selected, setSelected] = useState<Selected | null>(null);
  const [tab, setTab] = useState<Tab>("Git");
  const [terminalUsed, setTerminalUsed] = useState(false);

  const live = useLive({
    patterns: ["project.*"],
    subjects: [`project:${projectId}`],
    onEvent: (event: LiveEvent) => {
      if (event.type === "project.files_changed") {
        const changes = changesOf(event.data);
        if (event.data.truncated === true || !changes.length) void client.invalidateQueries({ queryKey: keys.tree(projectId) });
        else {
          for (const folder of foldersToRefresh(changes)) void client.invalidateQueries({ queryKey: keys.tree(projectId, folder) });
          // An added folder may already hold files: list it again if it is open.
          for (const change of changes) void client.invalidateQueries({ queryKey: keys.tree(projectId, change.path) });
        }
        void client.invalidateQueries({ queryKey: keys.git(projectId) });
        pane.current?.changedOnDisk(event.data);
      } else {
        void client.invalidateQueries({ queryKey: keys.project(projectId) });
      }
    },
  });

  if (project.isPending) return <p aria-busy="true">Loading…</p>;
  if (project.error) {
    return (
      <section className="stack">
        <h1>Project</h1>
        <ProblemView error={project.error} />
        <Link to="/projects">All projects</Link>
      </section>
    );
  }
  const data = project.data;
  const canWrite = data.permissions.includes("write");
  const canTerminal = data.permissions.includes("terminal");
  const allowed = (name: Tab) => (name === "Terminal" ? canTerminal : true);
  const choose = (name: Tab) => {
    setTab(name);
    if (name === "Terminal") setTerminalUsed(true);
  };

  return (
    <section className="stack project-page">
      <div className="row">
        <h1>{data.name}</h1>
        <span className="muted">{data.description}</span>
        <span className={`badge ${live === "live" ? "ok" : "warn"}`} title="Changes on disk arrive live">
          {live === "live" ? "Live" : live}
        </span>
        <Link to="/projects">All projects</Link>
      </div>
      <p className="muted small">
        {data.origin}
        {data.source ? ` from ${data.source}` : ""} · {data.directory} · you may {data.permissions.join(", ")}
      </p>
      <div className="workspace">
        <FileTree
          projectId={projectId}
          openPath={openPath}
          selected={selected}
          onSelect={setSelected}
          onOpen={(path) => pane.current?.open(path)}
          onGone={(path, movedTo) => pane.current?.gone(path, movedTo)}
        />
        <EditorPane ref={pane} projectId={projectId} onOpened={setOpenPath} />
      </div>
      <Tabs tab={tab} onChange={choose} allowed={allowed} />
      <div role="tabpanel" id="panel-Git" aria-labelledby="tab-Git" hidden={tab !== "Git"} className="card">
        <GitPanel projectId={projectId} canWrite={canWrite} />
      </div>
      {canTerminal ? (
        <div role="tabpanel" id="panel-Terminal" aria-labelledby="tab-Terminal" hidden={tab !== "Terminal"} className="card">
          {terminalUsed ? <TerminalPanel projectId={projectId} visible={tab === "Terminal"} /> : null}
        </div>
      ) : null}
      <div role="tabpanel" id="panel-Agent" aria-labelledby="tab-Agent" hidden={tab !== "Agent"} className="card">
        <AgentPanel project={data} context={() => pane.current?.context() ?? { path: null, selection: null }} />
      </div>
    </section>
  );
}
