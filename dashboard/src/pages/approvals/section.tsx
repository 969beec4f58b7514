import { lazyPage } from "../../components/lazyPage";
import type { Section } from "../../sections";

export const section: Section = {
  order: 20,
  label: "Approvals",
  href: "/approvals",
  routes: [{ path: "approvals", element: lazyPage(() => import("./ApprovalsPage")) }],
};
