// The dashboard's sections: each `pages/<area>/section.tsx` exports one, found at build time,
// so an area adds its pages and its entry in the navigation without touching shared files.

import type { RouteObject } from "react-router-dom";

export interface Section {
  /** Where it sits in the navigation (lower first). */
  order: number;
  label: string;
  /** The navigation link, e.g. `/agents`. */
  href: string;
  adminOnly?: boolean;
  routes: RouteObject[];
}

const modules = import.meta.glob<{ section: Section }>("./pages/*/section.tsx", { eager: true });

export const sections: Section[] = Object.values(modules)
  .map((module) => module.section)
  .sort((a, b) => a.order - b.order);
