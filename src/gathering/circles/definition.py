"""What people say about circles, members and tasks: the settings of a circle, the one
competency model (tags with levels, for members and for what a task needs), and the inputs of
each step of a task."""

from __future__ import annotations

import posixpath
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from gathering.db.fields import MAX_ID, Flag, Ref, Said, Whole

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
TAG_PATTERN = r"^[a-z0-9][a-z0-9_.+#-]{0,49}$"
MAX_TEXT = 20_000
NO_NUL = r"^[^\x00]*$"  # PostgreSQL's text holds no NUL
SAID = r"^[^\x00]*[^\x00\s][^\x00]*$"  # and something other than space
ROLES = ("lead", "member", "reviewer")

Role = Literal["lead", "member", "reviewer"]
Tag = Annotated[str, Field(pattern=TAG_PATTERN, description="A competency or a kind of work")]
Level = Annotated[Whole, Field(ge=1, le=5)]
Competencies = Annotated[
    dict[Tag, Level],
    Field(max_length=50, description="Tag -> level, 1 (novice) to 5 (expert)"),
]
"""The one competency model: what a member knows, and what a task needs, as tags with levels."""
Id = Annotated[Whole, Field(ge=1, le=MAX_ID)]


class CircleSettings(BaseModel):
    """How a circle works. Every field has a default; a change replaces the whole."""

    model_config = ConfigDict(extra="forbid")

    review_required: Flag = Field(default=True, description="Whether work is reviewed")
    review_required_for: dict[Tag, Flag] = Field(
        default_factory=dict,
        max_length=50,
        description="Per task type, overrides review_required",
    )
    review_types: list[Tag] = Field(
        default_factory=lambda: ["general"],
        min_length=1,
        max_length=20,
        description="The kinds of review a task may ask for; the first is the default",
    )
    reviewers_per_task: Whole = Field(
        default=1, ge=1, le=3, description="Distinct reviewers each attempt needs"
    )
    max_attempts: Whole = Field(
        default=5,
        ge=1,
        le=50,
        description="Attempts a task gets; changes asked after the last fail it",
    )
    max_parallel_tasks: Whole = Field(
        default=3, ge=1, le=100, description="Tasks one member works at once, at most"
    )
    routing: Literal["best_match", "least_loaded"] = Field(
        default="best_match",
        description="best_match weighs competence first; least_loaded, the lightest workload",
    )
    offer_timeout_seconds: Whole = Field(
        default=600, ge=1, le=7 * 86_400, description="How long an offer waits for its answer"
    )

    def needs_review(self, task_type: str) -> bool:
        """Whether a task of `task_type` is reviewed before it completes."""
        return self.review_required_for.get(task_type, self.review_required)


class CircleIn(BaseModel):
    """A new circle."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Lower-case letters, digits, - and _")
    description: str = Field(default="", max_length=MAX_TEXT, pattern=NO_NUL)
    settings: CircleSettings = Field(default_factory=CircleSettings)


class CircleChange(BaseModel):
    """A change of a circle: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=MAX_TEXT, pattern=NO_NUL)
    settings: CircleSettings | None = None


class MemberIn(BaseModel):
    """A new member: one of the owner's agents (by id or name), or a person (by user id)."""

    model_config = ConfigDict(extra="forbid")

    agent: Ref | None = Field(default=None, description="The agent's id or name")
    user_id: Id | None = Field(default=None, description="Or a person's account")
    role: Role = "member"
    competencies: Competencies = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_of(self) -> MemberIn:
        if (self.agent is None) == (self.user_id is None):
            raise ValueError("give either agent or user_id")
        return self


class MemberChange(BaseModel):
    """A change of a member: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    competencies: Competencies | None = None
    active: Flag | None = None


class TaskIn(BaseModel):
    """A new task of a circle."""

    model_config = ConfigDict(extra="forbid")

    title: Said = Field(min_length=1, max_length=200, pattern=SAID)
    description: str = Field(default="", max_length=MAX_TEXT, pattern=NO_NUL)
    task_type: Tag = "general"
    requirements: Competencies = Field(
        default_factory=dict, description="Tag -> the least level a member needs"
    )
    priority: Annotated[Whole, Field(ge=0, le=100)] = 0
    review_type: Tag | None = Field(
        default=None, description="One of the circle's review_types (default: its first)"
    )
    blocked_by: list[Id] = Field(
        default_factory=list, max_length=50, description="Tasks of the circle it waits for"
    )


def _one_spelling(value: str) -> str:
    """`value` in one spelling, so that two spellings of one path are one lock: "./a//b/",
    "a/c/../b", "/a/b" (from the workspace's root) and "a\\b" are all "a/b". The paths are
    names a task gives for what it changed; nothing here opens them."""
    found = posixpath.normpath(value.replace("\\", "/")).lstrip("/")
    return found or "."


WorkspacePath = Annotated[
    str,
    Field(min_length=1, max_length=1_000, pattern=NO_NUL),
    AfterValidator(_one_spelling),
]


class Submission(BaseModel):
    """What a member hands in for a task."""

    model_config = ConfigDict(extra="forbid")

    # The longest text, JSON-escaped, still fits in the body limit (test_body_limit.py).
    text: str = Field(max_length=80_000, pattern=NO_NUL, description="The work")
    summary: str = Field(default="", max_length=MAX_TEXT, pattern=NO_NUL)
    files: list[WorkspacePath] = Field(
        default_factory=list, max_length=500, description="Workspace paths it changed"
    )


Verdict = Literal["approved", "changes_requested", "rejected"]


class ReviewIn(BaseModel):
    """A reviewer's verdict on the current attempt."""

    model_config = ConfigDict(extra="forbid")

    verdict: Verdict
    feedback: str = Field(default="", max_length=MAX_TEXT, pattern=NO_NUL)

    @model_validator(mode="after")
    def _feedback_for_changes(self) -> ReviewIn:
        if self.verdict == "changes_requested" and not self.feedback.strip():
            raise ValueError("say which changes: feedback is required with changes_requested")
        return self
