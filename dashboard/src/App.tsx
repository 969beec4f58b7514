import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { Component, type ReactNode } from "react";
import { createBrowserRouter, RouterProvider, useRouteError } from "react-router-dom";

import { Authenticated } from "./auth";
import { ProblemView } from "./components/ProblemView";
import { Layout } from "./Layout";
import { Login } from "./Login";
import { Overview } from "./Overview";
import { sections } from "./sections";

const client = new QueryClient({
  defaultOptions: { queries: { staleTime: 5_000, refetchOnWindowFocus: false } },
});

function RouteError() {
  return (
    <section>
      <h1>Something went wrong</h1>
      <ProblemView error={useRouteError()} />
    </section>
  );
}

function NotFound() {
  return (
    <section>
      <h1>Not found</h1>
      <p>There is no page at this address.</p>
    </section>
  );
}

const router = createBrowserRouter([
  {
    path: "/",
    element: <Layout />,
    errorElement: <RouteError />,
    children: [
      { index: true, element: <Overview /> },
      ...sections.flatMap((section) => section.routes),
      { path: "*", element: <NotFound /> },
    ],
  },
]);

class Fatal extends Component<{ children: ReactNode }, { error: unknown }> {
  state = { error: null as unknown };
  static getDerivedStateFromError(error: unknown) {
    return { error };
  }
  render() {
    if (this.state.error) {
      return (
        <main className="login">
          <h1>GatheRing cannot start</h1>
          <ProblemView error={this.state.error} />
          <button type="button" onClick={() => location.reload()}>
            Retry
          </button>
        </main>
      );
    }
    return this.props.children;
  }
}

export function App() {
  return (
    <Fatal>
      <QueryClientProvider client={client}>
        <Authenticated login={<Login />}>
          <RouterProvider router={router} />
        </Authenticated>
      </QueryClientProvider>
    </Fatal>
  );
}
