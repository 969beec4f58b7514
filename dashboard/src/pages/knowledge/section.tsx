import { lazyPage } from "../../components/lazyPage";
import type { Section } from "../../sections";

export const section: Section = {
  order: 90,
  label: "Knowledge",
  href: "/knowledge",
  routes: [
    { path: "knowledge", element: lazyPage(() => import("./KnowledgePage")) },
    { path: "knowledge/:documentId", element: lazyPage(() => import("./DocumentPage")) },
  ],
};
