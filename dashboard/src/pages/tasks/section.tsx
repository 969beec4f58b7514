import { lazyPage } from "../../components/lazyPage";
import type { Section } from "../../sections";

export const section: Section = {
  order: 60,
  label: "Tasks",
  href: "/tasks",
  routes: [
    { path: "tasks", element: lazyPage(() => import("./TasksPage")) },
    { path: "tasks/:taskId", element: lazyPage(() => import("./TaskPage")) },
  ],
};
