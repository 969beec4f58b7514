// The typed client of our REST API, generated from its OpenAPI schema (`make dashboard-client`).
// It adds the bearer token, spends the refresh token once on a 401, and turns failures into
// `ProblemError`s, so every caller gets data or a problem to show.

import createClient, { type Middleware } from "openapi-fetch";

import { ProblemError, toProblem } from "./problem";
import type { paths } from "./schema";
import { readTokens, saveTokens, type Tokens } from "./session";

let refreshing: Promise<boolean> | null = null;

/** Spend the refresh token for a new pair; false when there is none or the server refused it
 * (401: signed out), true when another tab already did. A 429, a 5xx or a network failure keeps
 * the session (false: the caller's request fails, the next one tries again). Tabs share the
 * tokens, so they take turns (a Web Lock): a refresh token works once. */
export function refreshTokens(): Promise<boolean> {
  refreshing ??= (async () => {
    try {
      const before = readTokens()?.refresh_token;
      const spend = () => spendRefreshToken(before);
      return await (navigator.locks ? navigator.locks.request("gathering.refresh", spend) : spend());
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

async function spendRefreshToken(seen: string | undefined): Promise<boolean> {
  const tokens = readTokens();
  if (!tokens) return false;
  if (seen !== undefined && tokens.refresh_token !== seen) return true; // another tab did it
  let response: Response;
  try {
    response = await fetch("/auth/refresh", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: tokens.refresh_token }),
    });
  } catch {
    return false; // the network: the session stays
  }
  if (response.status === 401 || response.status === 400 || response.status === 422) {
    saveTokens(null); // spent, expired or revoked: sign in again
    return false;
  }
  if (!response.ok) return false;
  saveTokens((await response.json()) as Tokens);
  return true;
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
