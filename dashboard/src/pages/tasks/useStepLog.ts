// A task's step log: read page by page from the API (`after` = the last n seen), then kept
// up to date from its `task.step` events (a step is fetched again when it changes).

import { useCallback, useEffect, useRef, useState } from "react";

import { api, must } from "../../api/client";
import type { components } from "../../api/schema";

export type Step = components["schemas"]["StepOut"];
export const STEP_PAGE = 100;

/** `steps` with `fresh` put in by number (a newer copy of a step replaces the older). */
export function mergeSteps(steps: Step[], fresh: Step[]): Step[] {
  const byN = new Map(steps.map((step) => [step.n, step]));
  for (const step of fresh) byN.set(step.n, step);
  return [...byN.values()].sort((a, b) => a.n - b.n);
}

export interface StepLog {
  steps: Step[];
  /** The last page read was full: there may be more to read. */
  more: boolean;
  loading: boolean;
  error: unknown;
  loadMore: () => void;
  /** Read again from step `n` on (a `task.step` event about it). */
  refresh: (n?: number) => void;
}

export function useStepLog(taskId: number): StepLog {
  const [steps, setSteps] = useState<Step[]>([]);
  const [more, setMore] = useState(false);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<unknown>(null);
  const state = useRef({ steps, more });
  state.current = { steps, more };
  // One read at a time, in order, so pages never overlap or cross.
  const queue = useRef<Promise<void>>(Promise.resolve());

  const read = useCallback(
    (after: () => number) => {
      queue.current = queue.current.then(async () => {
        setLoading(true);
        try {
          const page = await must(
            api.GET("/tasks/{task_id}/steps", { params: { path: { task_id: taskId }, query: { after: after(), limit: STEP_PAGE } } }),
          );
          setSteps((current) => {
            const merged = mergeSteps(current, page);
            state.current = { steps: merged, more: page.length === STEP_PAGE };
            return merged;
          });
          setMore(page.length === STEP_PAGE);
          setError(null);
        } catch (problem) {
          setError(problem);
        } finally {
          setLoading(false);
        }
      });
    },
    [taskId],
  );

  useEffect(() => {
    setSteps([]);
    state.current = { steps: [], more: false };
    read(() => 0);
  }, [read]);

  const last = () => state.current.steps.at(-1)?.n ?? 0;
  const loadMore = useCallback(() => read(last), [read]);
  const refresh = useCallback(
    (n?: number) => {
      // While older pages are still unread, the next "more" reads the new steps too.
      if (state.current.more) return;
      read(() => Math.max(0, Math.min(last(), (n ?? last()) - 1)));
    },
    [read],
  );
  return { steps, more, loading, error, loadMore, refresh };
}
