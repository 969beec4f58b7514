import { NavLink, Outlet } from "react-router-dom";

import { useAuth } from "./auth";
import { sections } from "./sections";
import { ThemeToggle } from "./components/ThemeToggle";

export function Layout() {
  const { me, singleUser, signOut } = useAuth();
  const shown = sections.filter((section) => me.is_admin || !section.adminOnly);
  return (
    <div className="shell">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="bar">
        <strong className="brand">GatheRing</strong>
        <nav aria-label="Sections">
          <NavLink to="/" end>
            Overview
          </NavLink>
          {shown.map((section) => (
            <NavLink key={section.href} to={section.href}>
              {section.label}
            </NavLink>
          ))}
        </nav>
        <div className="who">
          <ThemeToggle />
          <span>{singleUser ? "single-user" : me.email}</span>
          {singleUser ? null : (
            <button type="button" onClick={() => void signOut()}>
              Sign out
            </button>
          )}
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <Outlet />
      </main>
    </div>
  );
}
