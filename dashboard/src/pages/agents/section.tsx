import { lazyPage } from "../../components/lazyPage";
import type { Section } from "../../sections";

export const section: Section = {
  order: 10,
  label: "Agents",
  href: "/agents",
  routes: [
    { path: "agents", element: lazyPage(() => import("./AgentsPage")) },
    { path: "agents/:agentId", element: lazyPage(() => import("./AgentChat")) },
    { path: "agents/:agentId/settings", element: lazyPage(() => import("./AgentSettingsPage")) },
  ],
};
