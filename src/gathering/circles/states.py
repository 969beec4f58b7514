"""The state machine of a circle's task: which status may follow which. Every move goes
through `check_move`, which refuses an illegal one with the statuses that may follow."""

from __future__ import annotations

from typing import Final

from gathering.errors import IllegalTransitionError

ENDED: Final = ("completed", "failed", "cancelled")
# pending -> offered -> in_progress -> in_review -> completed, with the side roads.
NEXT: Final[dict[str, tuple[str, ...]]] = {
    "pending": ("offered", "in_progress", "blocked", "cancelled"),
    "blocked": ("pending", "failed", "cancelled"),
    "offered": ("in_progress", "pending", "offered", "cancelled"),
    "in_progress": ("in_review", "completed", "failed", "cancelled"),
    "in_review": ("completed", "changes_requested", "failed", "cancelled"),
    "changes_requested": ("in_progress", "failed", "cancelled"),
    "completed": (),
    "failed": (),
    "cancelled": (),
}
STATUSES: Final = tuple(NEXT)


def check_move(task_id: int, status: str, to: str) -> None:
    """Nothing when task `task_id` may go from `status` to `to`; else `IllegalTransitionError`
    naming the statuses that may follow."""
    allowed = NEXT[status]
    if to not in allowed:
        raise IllegalTransitionError(
            f"task {task_id} is {status}: it cannot become {to}",
            hint=f"from {status} it may become: {', '.join(allowed) or 'nothing (it ended)'}",
            details={"status": status, "wanted": to, "allowed": list(allowed)},
        )
