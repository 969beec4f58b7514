// The signed-in session: tokens kept in localStorage, so a reload stays signed in.
// In single-user mode the server needs no token and this stays empty.

export interface Tokens {
  access_token: string;
  refresh_token: string;
}

const KEY = "gathering.session";
type Listener = (tokens: Tokens | null) => void;
const listeners = new Set<Listener>();

export function readTokens(): Tokens | null {
  const raw = localStorage.getItem(KEY);
  if (!raw) return null;
  try {
    const value = JSON.parse(raw) as Partial<Tokens>;
    if (typeof value.access_token === "string" && typeof value.refresh_token === "string") {
      return { access_token: value.access_token, refresh_token: value.refresh_token };
    }
  } catch {
    // a damaged entry is the same as none
  }
  localStorage.removeItem(KEY);
  return null;
}

export function saveTokens(tokens: Tokens | null): void {
  if (tokens) localStorage.setItem(KEY, JSON.stringify(tokens));
  else localStorage.removeItem(KEY);
  for (const listener of listeners) listener(tokens);
}

/** Call `listener` whenever the session changes (sign-in, refresh, sign-out); returns the undo. */
export function onTokens(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** Seconds until `token` (a JWT) expires, from its `exp` claim; null when it has none. */
export function secondsLeft(token: string, now: number = Date.now()): number | null {
  try {
    const part = token.split(".")[1] ?? "";
    const claims = JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/"))) as { exp?: unknown };
    return typeof claims.exp === "number" ? claims.exp - now / 1000 : null;
  } catch {
    return null;
  }
}
