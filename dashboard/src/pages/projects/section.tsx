import { lazyPage } from "../../components/lazyPage";
import type { Section } from "../../sections";

export const section: Section = {
  order: 80,
  label: "Projects",
  href: "/projects",
  routes: [
    { path: "projects", element: lazyPage(() => import("./ProjectsPage")) },
    // The workspace (Monaco, xterm) is its own chunk, loaded only here.
    { path: "projects/:projectId", element: lazyPage(() => import("./ProjectPage")) },
  ],
};
