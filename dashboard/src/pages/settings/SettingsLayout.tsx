// Settings: one sub-page per part of the server an administrator runs, each at its own address.

import { NavLink, Outlet } from "react-router-dom";

import { useAuth } from "../../auth";
import "./settings.css";

const TABS = [
  { to: "providers", label: "Providers" },
  { to: "models", label: "Models and prices" },
  { to: "personas", label: "Personas" },
  { to: "users", label: "Users and roles" },
  { to: "api-keys", label: "API keys" },
  { to: "audit", label: "Audit log" },
];

export default function SettingsLayout() {
  const { me } = useAuth();
  return (
    <section className="stack">
      <h1>Settings</h1>
      {me.is_admin ? (
        <>
          <nav aria-label="Settings" className="settings-tabs">
            {TABS.map((tab) => (
              <NavLink key={tab.to} to={tab.to}>
                {tab.label}
              </NavLink>
            ))}
          </nav>
          <Outlet />
        </>
      ) : (
        <p>Settings are for administrators. Ask one to change providers, models, users or keys.</p>
      )}
    </section>
  );
}
