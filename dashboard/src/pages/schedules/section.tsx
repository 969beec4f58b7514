import { lazyPage } from "../../components/lazyPage";
import type { Section } from "../../sections";

export const section: Section = {
  order: 50,
  label: "Schedules",
  href: "/schedules",
  routes: [
    { path: "schedules", element: lazyPage(() => import("./SchedulesPage")) },
    { path: "schedules/:scheduleId", element: lazyPage(() => import("./SchedulePage")) },
  ],
};
