import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";
import "@xterm/xterm/css/xterm.css";
import { useEffect, useRef, useState } from "react";

import { refreshTokens } from "../../api/client";
import { onTokens, readTokens, secondsLeft } from "../../api/session";

type State = { kind: "closed" } | { kind: "connecting" } | { kind: "open"; network: boolean } | { kind: "ended"; why: string; hint?: string };

const FRAME_LIMIT = 60_000; // a frame is at most 64 KiB: longer pastes go in pieces
const RENEW_BEFORE = 120; // seconds: a token closer to its end is refreshed
const RENEW_EVERY_MS = 30_000;

/** The project's shell (in the server's sandbox) in xterm.js, over its WebSocket. */
export function TerminalPanel({ projectId, visible }: { projectId: number; visible: boolean }) {
  const host = useRef<HTMLDivElement>(null);
  const fit = useRef<FitAddon | null>(null);
  const [state, setState] = useState<State>({ kind: "closed" });
  const [session, setSession] = useState(0);

  useEffect(() => {
    if (!session || !host.current) return;
    const term = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 13, scrollback: 5000, screenReaderMode: false });
    const fitter = new FitAddon();
    term.loadAddon(fitter);
    term.open(host.current);
    fit.current = fitter;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/ws/projects/${projectId}/terminal`);
    let ended = false;
    const send = (frame: Record<string, unknown>) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
    };
    const sendSize = () => send({ type: "resize", cols: term.cols, rows: term.rows });
    setState({ kind: "connecting" });

    // Multi-user: the first frame authenticates (single-user sockets are the owner's at once).
    // The socket's credentials expire with the access token: a token about to expire is
    // refreshed first, and every refreshed one is sent on, so the shell outlives them.
    const fresh = async () => {
      const tokens = readTokens();
      const left = tokens ? secondsLeft(tokens.access_token) : null;
      if (tokens && left !== null && left < RENEW_BEFORE) await refreshTokens();
    };
    socket.onopen = () => {
      void fresh().then(() => {
        const tokens = readTokens();
        if (tokens) send({ type: "auth", token: tokens.access_token });
      });
    };
    const renewed = onTokens((tokens) => {
      if (tokens) send({ type: "auth", token: tokens.access_token });
    });
    const renewal = setInterval(() => void fresh(), RENEW_EVERY_MS);
    socket.onmessage = (message) => {
      if (typeof message.data !== "string") return;
      const frame = JSON.parse(message.data) as Record<string, unknown>;
      switch (frame.type) {
        case "ready":
          setState({ kind: "open", network: Boolean(frame.network) });
          try {
            fitter.fit();
          } catch {
            // not laid out yet: the next resize sends the size
          }
          sendSize();
          term.focus();
          break;
        case "output":
          term.write(String(frame.data ?? ""));
          break;
        case "exit":
          ended = true;
          term.write(`\r\n[exited ${String(frame.code)}]\r\n`);
          setState({ kind: "ended", why: `The shell exited with code ${String(frame.code)}.` });
          break;
        case "error":
          if (frame.code === "invalid_input" || frame.code === "invalid_message") break; // the terminal stays open
          ended = true;
          setState({ kind: "ended", why: String(frame.message ?? frame.code), hint: typeof frame.hint === "string" ? frame.hint : undefined });
          break;
        default:
          break;
      }
    };
    socket.onclose = (close) => {
      if (!ended) setState({ kind: "ended", why: close.reason || `The terminal closed (code ${close.code}).` });
    };
    const input = term.onData((data) => {
      for (let start = 0; start < data.length; start += FRAME_LIMIT) send({ type: "input", data: data.slice(start, start + FRAME_LIMIT) });
    });
    const resized = term.onResize(sendSize);
    const observer = new ResizeObserver(() => {
      if (host.current?.offsetParent === null) return; // hidden
      try {
        fitter.fit();
      } catch {
        // not laid out
      }
    });
    observer.observe(host.current);
    return () => {
      renewed();
      clearInterval(renewal);
      observer.disconnect();
      input.dispose();
      resized.dispose();
      ended = true;
      socket.close(1000);
      term.dispose();
      fit.current = null;
    };
  }, [projectId, session]);

  // Shown again after another tab: fit to the space it has now.
  useEffect(() => {
    if (visible) {
      try {
        fit.current?.fit();
      } catch {
        // not laid out
      }
    }
  }, [visible]);

  const running = state.kind === "open" || state.kind === "connecting";
  return (
    <div className="stack">
      <div className="row">
        {running ? (
          <button
            type="button"
            onClick={() => {
              setSession(0); // closes the socket: the shell is killed
              setState({ kind: "closed" });
            }}
          >
            Close terminal
          </button>
        ) : (
          <button type="button" className="primary" onClick={() => setSession((n) => n + 1)}>
            {state.kind === "ended" ? "Open a new terminal" : "Open terminal"}
          </button>
        )}
        <span className="muted" role="status">
          {state.kind === "connecting" ? "Connecting…" : null}
          {state.kind === "open" ? `Connected${state.network ? ", with network" : ", no network"}` : null}
        </span>
      </div>
      {state.kind === "ended" ? (
        <div className="problem" role="alert">
          <strong>{state.why}</strong>
          {state.hint ? <p>{state.hint}</p> : null}
        </div>
      ) : null}
      {session ? <div ref={host} className="terminal-host" aria-label="Terminal" role="group" /> : <p className="muted">The shell runs in the server's sandbox, in the project's folder.</p>}
    </div>
  );
}
