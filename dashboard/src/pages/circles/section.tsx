import { lazyPage } from "../../components/lazyPage";
import type { Section } from "../../sections";

export const section: Section = {
  order: 30,
  label: "Circles",
  href: "/circles",
  routes: [
    { path: "circles", element: lazyPage(() => import("./CirclesPage")) },
    {
      path: "circles/:circleId",
      element: lazyPage(() => import("./CircleLayout")),
      children: [
        { index: true, element: lazyPage(() => import("./CircleMembers")) },
        { path: "board", element: lazyPage(() => import("./TaskBoard")) },
        { path: "tasks/:taskId", element: lazyPage(() => import("./TaskPage")) },
        { path: "conversations", element: lazyPage(() => import("./ConversationsPage")) },
        { path: "conversations/:conversationId", element: lazyPage(() => import("./ConversationPage")) },
        { path: "settings", element: lazyPage(() => import("./CircleSettingsPage")) },
      ],
    },
  ],
};
