// The typed client of our REST API, generated from its OpenAPI schema (`make dashboard-client`).
// It adds the bearer token, spends the refresh token once on a 401, and turns failures into
// `ProblemError`s, so every caller gets data or a problem to show.

import createClient, { type Middleware } from "openapi-fetch";

import { ProblemError, toProblem } from "./problem";
import type { paths } from "./schema";
import { readTokens, saveTokens, type Tokens } from "./session";

let refreshing: Promise<boolean> | null = null;

/** Spend the refresh token for a new pair; false (and signed out) when that fails. */
export function refreshTokens(): Promise<boolean> {
  refreshing ??= (async () => {
    const tokens = readTokens();
    if (!tokens) return false;
    try {
      const response = await fetch("/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: tokens.refresh_token }),
      });
      if (!response.ok) {
        saveTokens(null);
        return false;
      }
      saveTokens((await response.json()) as Tokens);
      return true;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/** Headers that carry the current access token, for requests made without the client. */
export function authHeaders(): Record<string, string> {
  const tokens = readTokens();
  return tokens ? { Authorization: `Bearer ${tokens.access_token}` } : {};
}

// A copy of each request as sent, to send again once after a refreshed token.
const copies = new WeakMap<Request, Request>();

const auth: Middleware = {
  onRequest({ request }) {
    const tokens = readTokens();
    if (tokens && !request.headers.has("Authorization")) {
      request.headers.set("Authorization", `Bearer ${tokens.access_token}`);
    }
    copies.set(request, request.clone());
    return request;
  },
  async onResponse({ request, response }) {
    const copy = copies.get(request);
    if (response.status === 401 && copy && readTokens() && !request.url.endsWith("/auth/refresh")) {
      if (await refreshTokens()) {
        copy.headers.set("Authorization", authHeaders().Authorization ?? "");
        return fetch(copy);
      }
    }
    return response;
  },
};

export const api = createClient<paths>({ baseUrl: "" });
api.use(auth);

/** The data of a call made with `api`, or a thrown `ProblemError`. */
export async function must<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  const { data, error, response } = await call;
  if (!response.ok) throw new ProblemError(toProblem(response.status, error));
  return data as T;
}
