"""Who gets a task, and who reviews it: members scored by competency match, workload and past
quality, each choice with the reason that is stored beside it. Pure functions: the callers
read the candidates in the transaction that stores the decision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Strategy = Literal["best_match", "least_loaded"]
# (match, availability, quality) weights of each strategy.
_WEIGHTS: dict[str, tuple[float, float, float]] = {
    "best_match": (0.6, 0.25, 0.15),
    "least_loaded": (0.25, 0.6, 0.15),
}


@dataclass(frozen=True)
class Candidate:
    """A member as routing sees them."""

    member_id: int
    role: str
    competencies: Mapping[str, int]
    load: int  # tasks offered to them or in their hands, not ended
    verdicts: int  # reviews of their work
    approvals: int  # of which approved


@dataclass(frozen=True)
class Choice:
    """A member routing would pick, with their score and the reason in words."""

    member_id: int
    score: float
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"member_id": self.member_id, "score": round(self.score, 4), "reason": self.reason}


def match(requirements: Mapping[str, int], competencies: Mapping[str, int]) -> float | None:
    """How well `competencies` cover `requirements`, in (0, 1]: 1 when there are none; None
    when a tag is missing or below its level. A level above the need scores higher."""
    if not requirements:
        return 1.0
    parts = []
    for tag, need in requirements.items():
        level = competencies.get(tag, 0)
        if level < need:
            return None
        parts.append((level - need + 1) / (6 - need))
    return sum(parts) / len(parts)


def availability(load: int, cap: int) -> float:
    """1 with nothing to do, 0 at `cap` tasks (then no offer)."""
    return max(0.0, 1.0 - load / cap)


def quality(verdicts: int, approvals: int) -> float:
    """The approval rate, smoothed (0.5 with no review yet)."""
    return (approvals + 1) / (verdicts + 2)


def _skills(requirements: Mapping[str, int], competencies: Mapping[str, int]) -> str:
    if not requirements:
        return "no competency needed"
    return ", ".join(
        f"{tag} {competencies.get(tag, 0)} (needs {need})" for tag, need in requirements.items()
    )


def rank_workers(
    requirements: Mapping[str, int],
    candidates: list[Candidate],
    *,
    cap: int,
    strategy: Strategy,
    excluded: frozenset[int] = frozenset(),
) -> list[Choice]:
    """The members who may take a task, best first (ties: the earliest member). Reviewers
    only review; `excluded` members (who refused or let an offer expire) are passed over."""
    w_match, w_free, w_quality = _WEIGHTS[strategy]
    choices = []
    for member in candidates:
        if member.role == "reviewer" or member.member_id in excluded or member.load >= cap:
            continue
        fit = match(requirements, member.competencies)
        if fit is None:
            continue
        free = availability(member.load, cap)
        rate = quality(member.verdicts, member.approvals)
        score = w_match * fit + w_free * free + w_quality * rate
        reason = (
            f"{_skills(requirements, member.competencies)}; load {member.load}/{cap}; "
            f"approval {rate:.0%}; {strategy} score {score:.2f}"
        )
        choices.append(Choice(member.member_id, score, reason))
    choices.sort(key=lambda choice: (-choice.score, choice.member_id))
    return choices


def rank_reviewers(
    review_type: str,
    candidates: list[Candidate],
    *,
    author_id: int | None,
    cap: int,
    excluded: frozenset[int] = frozenset(),
) -> list[Choice]:
    """The members who may review an attempt of `review_type`, best first: reviewers and
    members who know the type; never the author. Leads come in `lead_fallback`."""
    choices = []
    for member in candidates:
        if member.member_id in (author_id, *excluded):
            continue
        level = member.competencies.get(review_type, 0)
        if member.role != "reviewer" and level == 0:
            continue
        role_bonus = 0.2 if member.role == "reviewer" else 0.0
        score = 0.5 * level / 5 + 0.3 * availability(min(member.load, cap), cap) + role_bonus
        reason = (
            f"{member.role} with {review_type} {level}; load {member.load}/{cap}; score {score:.2f}"
        )
        choices.append(Choice(member.member_id, score, reason))
    choices.sort(key=lambda choice: (-choice.score, choice.member_id))
    return choices


def lead_fallback(
    review_type: str,
    candidates: list[Candidate],
    *,
    author_id: int | None,
    excluded: frozenset[int] = frozenset(),
) -> Choice | None:
    """A lead who is not the author, when no one else may review `review_type`."""
    for member in sorted(candidates, key=lambda found: (found.load, found.member_id)):
        if member.role == "lead" and member.member_id not in (author_id, *excluded):
            reason = f"no reviewer knows {review_type}: the lead reviews"
            return Choice(member.member_id, 0.0, reason)
    return None
