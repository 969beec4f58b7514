// Who is signed in. Single-user servers answer `/auth/me` without a token; multi-user ones
// answer 401 until the login form has exchanged an email and password for tokens.

import { useQuery, useQueryClient } from "@tanstack/react-query";
import { createContext, useContext, useEffect, type ReactNode } from "react";

import { api, must } from "./api/client";
import { ProblemError } from "./api/problem";
import type { components } from "./api/schema";
import { onTokens, saveTokens } from "./api/session";

export type Me = components["schemas"]["MeResponse"];

interface AuthState {
  me: Me;
  /** True when the server runs single-user (no login, no logout). */
  singleUser: boolean;
  signOut: () => Promise<void>;
}

const AuthContext = createContext<AuthState | null>(null);

export function useAuth(): AuthState {
  const state = useContext(AuthContext);
  if (!state) throw new Error("useAuth outside <Authenticated>");
  return state;
}

export function useMe() {
  return useQuery({
    queryKey: ["me"],
    queryFn: () => must(api.GET("/auth/me")),
    retry: false,
    staleTime: 60_000,
  });
}

export async function signIn(email: string, password: string): Promise<void> {
  saveTokens(await must(api.POST("/auth/login", { body: { email, password } })));
}

/** Shows `children` to a signed-in user, and `login` to anyone else. */
export function Authenticated({ children, login }: { children: ReactNode; login: ReactNode }) {
  const client = useQueryClient();
  const me = useMe();
  // Signing in or out changes who asks: `me` again (a refresh keeps who it is: nothing to do).
  useEffect(
    () =>
      onTokens((tokens) => {
        if (!tokens) void client.resetQueries();
        else void client.invalidateQueries({ queryKey: ["me"] });
      }),
    [client],
  );
  if (me.isPending) return <p aria-busy="true">Connecting…</p>;
  if (me.error instanceof ProblemError && me.error.problem.status === 401) return <>{login}</>;
  if (me.error && !me.data) throw me.error; // a passing failure keeps the page as it is
  const state: AuthState = {
    me: me.data,
    singleUser: me.data.auth_method === "local",
    signOut: async () => {
      try {
        await must(api.POST("/auth/logout"));
      } finally {
        saveTokens(null);
        // No data of this account stays; `me` is asked again, and answers with the login form.
        await client.resetQueries();
      }
    },
  };
  return <AuthContext.Provider value={state}>{children}</AuthContext.Provider>;
}
