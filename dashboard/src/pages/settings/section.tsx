import { Navigate } from "react-router-dom";

import { lazyPage } from "../../components/lazyPage";
import type { Section } from "../../sections";

export const section: Section = {
  order: 110,
  label: "Settings",
  href: "/settings",
  adminOnly: true,
  routes: [
    {
      path: "settings",
      element: lazyPage(() => import("./SettingsLayout")),
      children: [
        { index: true, element: <Navigate to="providers" replace /> },
        { path: "providers", element: lazyPage(() => import("./ProvidersTab")) },
        { path: "models", element: lazyPage(() => import("./ModelsTab")) },
        { path: "personas", element: lazyPage(() => import("./PersonasTab")) },
        { path: "users", element: lazyPage(() => import("./UsersTab")) },
        { path: "api-keys", element: lazyPage(() => import("./ApiKeysTab")) },
        { path: "audit", element: lazyPage(() => import("./AuditTab")) },
      ],
    },
  ],
};
