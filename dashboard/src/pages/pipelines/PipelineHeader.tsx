import { NavLink, useParams } from "react-router-dom";

import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { usePipeline } from "./queries";

/** The pipeline's id from the address (0 when it is not a number: the API answers 422). */
export function usePipelineId(): number {
  const { pipelineId } = useParams();
  const id = Number(pipelineId);
  return Number.isInteger(id) && id > 0 ? id : 0;
}

/** The pipeline's name, current version and its pages (editor, runs). */
export function PipelineHeader({ title }: { title?: string }) {
  const id = usePipelineId();
  const pipeline = usePipeline(id);
  return (
    <header className="stack pipeline-header">
      <p className="muted crumbs">
        <NavLink to="/pipelines">Pipelines</NavLink> /
      </p>
      <h1>{title ?? pipeline.data?.name ?? "Pipeline"}</h1>
      {pipeline.error ? <ProblemView error={pipeline.error} /> : null}
      {pipeline.data ? (
        <p className="muted">
          {title ? `${pipeline.data.name} · ` : ""}version {pipeline.data.version} · saved {when(pipeline.data.updated_at)}
          {pipeline.data.description ? ` · ${pipeline.data.description}` : ""}
        </p>
      ) : null}
      <nav className="tabs" aria-label="Pipeline pages">
        <NavLink to={`/pipelines/${id}`} end>
          Editor
        </NavLink>
        <NavLink to={`/pipelines/${id}/runs`}>Runs</NavLink>
      </nav>
    </header>
  );
}
