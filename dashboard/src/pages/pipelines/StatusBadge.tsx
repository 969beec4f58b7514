/** A run's or a node's status, written and coloured. */
export function StatusBadge({ status }: { status: string }) {
  return <span className={`badge run-status status-${status}`}>{status}</span>;
}
