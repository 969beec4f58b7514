import { lazyPage } from "../../components/lazyPage";
import type { Section } from "../../sections";

export const section: Section = {
  order: 70,
  label: "Goals",
  href: "/goals",
  routes: [
    { path: "goals", element: lazyPage(() => import("./GoalsPage")) },
    { path: "goals/:goalId", element: lazyPage(() => import("./GoalPage")) },
  ],
};
