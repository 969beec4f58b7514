import { tone } from "./shared";

const HIDDEN = {
  position: "absolute",
  width: "1px",
  height: "1px",
  overflow: "hidden",
  clip: "rect(0 0 0 0)",
  whiteSpace: "nowrap",
} as const;

/** A status as a coloured badge; screen readers (and tests) read "Status of <what>: <status>". */
export function StatusBadge({ status, of }: { status: string; of?: string }) {
  return (
    <span className={`badge ${tone(status)}`}>
      <span style={HIDDEN}>{of ? `Status of ${of}: ` : "Status: "}</span>
      {status.replaceAll("_", " ")}
    </span>
  );
}
