// When a schedule fires, as the form holds it and as the pages say it. The fire times themselves
// come from the server (`POST /schedules/preview`, `GET /schedules/{id}/preview`).

export interface Timing {
  kind: "cron" | "interval" | "once" | "event";
  cron?: string | null;
  timezone?: string;
  every_seconds?: number | null;
  at?: string | null;
  start_at?: string | null;
  end_at?: string | null;
  event_type?: string | null;
}

/** A short reading of when a stored schedule fires. */
export function describeTiming(spec: Record<string, unknown>): string {
  switch (spec.kind) {
    case "cron":
      return `cron ${String(spec.cron)} (${String(spec.timezone ?? "UTC")})`;
    case "interval":
      return `every ${everyText(Number(spec.every_seconds))}`;
    case "once":
      return `once at ${new Date(String(spec.at)).toLocaleString()}`;
    case "event":
      return `on ${String(spec.event_type)} events`;
    default:
      return String(spec.kind);
  }
}

export function everyText(seconds: number): string {
  if (seconds % 86400 === 0) return `${seconds / 86400} d`;
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}
