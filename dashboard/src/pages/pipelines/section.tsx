import { lazyPage } from "../../components/lazyPage";
import type { Section } from "../../sections";

export const section: Section = {
  order: 40,
  label: "Pipelines",
  href: "/pipelines",
  routes: [
    { path: "pipelines", element: lazyPage(() => import("./PipelinesPage")) },
    { path: "pipelines/:pipelineId", element: lazyPage(() => import("./EditorPage")) },
    { path: "pipelines/:pipelineId/runs", element: lazyPage(() => import("./RunsPage")) },
    { path: "pipelines/:pipelineId/runs/:runId", element: lazyPage(() => import("./RunPage")) },
  ],
};
