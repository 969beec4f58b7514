import { lazy, Suspense, type ComponentType } from "react";

/** A page whose code loads when it is first shown (Monaco, xterm and React Flow stay out of the first load). */
export function lazyPage(load: () => Promise<{ default: ComponentType }>) {
  const Page = lazy(load);
  return (
    <Suspense fallback={<p aria-busy="true">Loading…</p>}>
      <Page />
    </Suspense>
  );
}
