import { lazyPage } from "../../components/lazyPage";
import type { Section } from "../../sections";

export const section: Section = {
  order: 100,
  label: "Usage",
  href: "/usage",
  routes: [{ path: "usage", element: lazyPage(() => import("./UsagePage")) }],
};
