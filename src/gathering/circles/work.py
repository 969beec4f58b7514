"""The agents of a circle act: an agent offered a task claims it, works it with its tools
and submits the reply; an agent asked to review reads the work and gives a verdict with the
model. Each runs as a job (`circles:work`, `circles:review`) on any instance; a job run again
after a crash replays the turn it finished (found by its idempotency key), or runs again a
turn that was cut short."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pydantic import ValidationError

from gathering.agents import Agent, PostgresAgentStore
from gathering.agents.turn_loop import TurnResult
from gathering.circles.definition import ReviewIn, Submission
from gathering.circles.store import SQL, CircleRecord, MemberRecord, get_circle, get_member
from gathering.circles.tasks import (
    REVIEW,
    WORK,
    Actor,
    CircleTask,
    TaskFlow,
    agent_job,
    get_circle_task,
)
from gathering.db.database import Database
from gathering.errors import (
    AgentBusyError,
    ConflictError,
    GatheringError,
    NotFoundError,
    PermissionDeniedError,
    TurnFailedError,
)
from gathering.events import EventBus
from gathering.llm import TextDelta
from gathering.pipelines.handlers import json_part

log = structlog.get_logger(__name__)
MAX_SUMMARY = 300
MAX_SUBMISSION = 80_000  # characters of a reply handed in (Submission.text's limit)
BUSY_RETRY_SECONDS = 5.0  # an agent busy in another turn is asked again this much later
MAX_RERUNS = 5  # turns of one attempt cut short by a crash, run again at most
_VERDICTS = {
    "approved": "approved",
    "approve": "approved",
    "changes_requested": "changes_requested",
    "request_changes": "changes_requested",
    "changes": "changes_requested",
    "rejected": "rejected",
    "reject": "rejected",
}


def work_prompt(circle: CircleRecord, member: MemberRecord, task: CircleTask) -> str:
    """What an agent is asked to do for an attempt of `task`, with the feedback of the
    previous attempt when changes were requested."""
    lines = [
        f"You are {member.name}, a {member.role} of the circle {circle.name!r}.",
        f"Your task (#{task.id}, attempt {task.iteration}): {task.title}",
    ]
    if task.description:
        lines += ["", task.description]
    if task.feedback and task.result:
        lines += [
            "",
            "Your previous attempt was:",
            str(task.result.get("text", "")),
            "",
            "The reviewer asked for these changes; address every point:",
            task.feedback,
        ]
    lines += ["", "Do the work, then reply with the finished result."]
    return "\n".join(lines)


def review_prompt(circle: CircleRecord, member: MemberRecord, task: CircleTask) -> str:
    """What an agent is asked to review, and the JSON verdict it must answer with."""
    result = task.result or {}
    return "\n".join(
        [
            f"You are {member.name}, reviewing for the circle {circle.name!r} "
            f"({task.review_type} review).",
            f"Task #{task.id}: {task.title}",
            task.description,
            "",
            f"The work handed in (attempt {task.iteration}):",
            str(result.get("text", "")),
            "",
            'Answer with JSON only: {"verdict": "approved" | "changes_requested" | "rejected", '
            '"feedback": "what to change, point by point"}.',
        ]
    )


def parse_verdict(text: str) -> ReviewIn | None:
    """The verdict in a reviewer's reply, or None when it holds none."""
    try:
        value: Any = json.loads(json_part(text))
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("verdict"), str):
        return None
    verdict = _VERDICTS.get(value["verdict"].strip().lower())
    feedback = value.get("feedback", "")
    if verdict is None or not isinstance(feedback, str):
        return None
    try:
        return ReviewIn.model_validate({"verdict": verdict, "feedback": feedback[:20_000]})
    except ValidationError:
        return None


async def run_agent_turn(
    agent: Agent,
    prompt: str,
    key: str,
    on_delta: Callable[[str], Awaitable[None]] | None = None,
) -> TurnResult:
    """`agent`'s turn on `prompt` in a new session under idempotency key `key`: a finished
    turn of that key is replayed, not made twice; a turn cut short (its process died) answers
    its key with TurnFailedError, and runs again under the next key (`key:1`, ...). Each piece
    of the reply's text goes to `on_delta` as it comes."""
    for run in range(MAX_RERUNS + 1):
        try:
            result: TurnResult | None = None
            async for event in agent.stream(
                prompt, idempotency_key=key if run == 0 else f"{key}:{run}", new_session=True
            ):
                if isinstance(event, TextDelta) and on_delta is not None:
                    await on_delta(event.text)
                elif isinstance(event, TurnResult):
                    result = event
            assert result is not None
            return result
        except TurnFailedError:
            if run == MAX_RERUNS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def circle_agent(
    db: Database, bus: EventBus | None, circle: CircleRecord, member: MemberRecord
) -> Agent:
    """Agent member `member`, working in the circle's workspace."""
    store = PostgresAgentStore(db)
    assert member.agent_id is not None
    agent = Agent.from_record(await store.load_agent(member.agent_id), store=store)
    agent.event_bus = bus
    agent.workspace = circle.workspace
    return agent


class CircleWorker:
    """Runs the agents' side of circles' tasks."""

    def __init__(self, db: Database, bus: EventBus | None) -> None:
        self.db = db
        self.bus = bus
        self.flow = TaskFlow(db, bus)

    async def _turn(
        self, circle: CircleRecord, member: MemberRecord, prompt: str, key: str
    ) -> TurnResult:
        started = time.monotonic()
        result = await run_agent_turn(
            await circle_agent(self.db, self.bus, circle, member), prompt, key
        )
        if not result.replayed:
            tokens = result.usage.input_tokens + result.usage.output_tokens
            await self.db.execute(SQL["count_work"], member.id, tokens, time.monotonic() - started)
        return result

    async def work(self, task_id: int, iteration: int, member_id: int) -> None:
        """Member `member_id` (an agent) works attempt `iteration` of task `task_id`, when it
        is still theirs to do; a job of an attempt that is over (or of a task, a member that
        is gone) does nothing. An agent busy in another turn tries again a little later."""
        try:
            await self._work(task_id, iteration, member_id)
        except NotFoundError as exc:
            log.info("circle work not needed any more", task_id=task_id, reason=str(exc))
        except AgentBusyError:
            await self._later(WORK, task_id, iteration, member_id)

    async def review(self, task_id: int, iteration: int, member_id: int) -> None:
        """Member `member_id` (an agent) reviews attempt `iteration` of task `task_id`, when it
        still waits for their verdict. An answer that is no verdict goes up to a lead."""
        try:
            await self._review(task_id, iteration, member_id)
        except NotFoundError as exc:
            log.info("circle review not needed any more", task_id=task_id, reason=str(exc))
        except AgentBusyError:
            await self._later(REVIEW, task_id, iteration, member_id)

    async def _later(self, job: str, task_id: int, iteration: int, member_id: int) -> None:
        member = await get_member(
            self.db, (await get_circle_task(self.db, task_id)).circle_id, member_id
        )
        at = datetime.now(UTC) + timedelta(seconds=BUSY_RETRY_SECONDS)
        async with self.db.transaction() as tx:
            await agent_job(tx, job, task_id, iteration, member, at=at)

    async def _work(self, task_id: int, iteration: int, member_id: int) -> None:
        task = await self.flow.start_attempt(task_id, member_id, iteration)
        if task is None:
            return
        circle = await get_circle(self.db, task.circle_id)
        member = await get_member(self.db, circle.id, member_id)
        if member.agent_id is None:
            return  # its agent was deleted: the offers duty moves the task on
        actor = Actor(member_id=member_id)
        try:
            result = await self._turn(
                circle, member, work_prompt(circle, member, task), f"circle:{task.id}:{iteration}"
            )
        except AgentBusyError:
            raise
        except GatheringError as exc:
            log.warning("circle task attempt failed", task_id=task.id, error=str(exc))
            error = f"the agent's turn failed: {exc}"
            await self.flow.fail(task.id, actor, error, iteration=iteration)
            return
        if result.outcome != "completed":
            error = f"the agent's turn ended {result.outcome}"
            await self.flow.fail(task.id, actor, error, iteration=iteration)
            return
        text = result.text.replace("\x00", "")[:MAX_SUBMISSION]
        work = Submission(text=text, summary=text.strip().partition("\n")[0][:MAX_SUMMARY])
        await self.flow.submit(task.id, actor, work, iteration=iteration)

    async def _review(self, task_id: int, iteration: int, member_id: int) -> None:
        task = await get_circle_task(self.db, task_id)
        if (task.status, task.iteration) != ("in_review", iteration):
            return
        circle = await get_circle(self.db, task.circle_id)
        member = await get_member(self.db, circle.id, member_id)
        if member.agent_id is None:  # its agent was deleted: another reviews
            await self.flow.escalate(task.id, member_id, iteration, "the reviewer is gone")
            return
        key = f"circle-review:{task.id}:{iteration}:{member_id}"
        try:
            result = await self._turn(circle, member, review_prompt(circle, member, task), key)
        except AgentBusyError:
            raise
        except GatheringError as exc:
            await self.flow.escalate(task.id, member_id, iteration, f"the review failed: {exc}")
            return
        verdict = parse_verdict(result.text)
        if verdict is None:
            reason = f"member {member_id}'s answer was not a verdict: {result.text[:200]!r}"
            await self.flow.escalate(task.id, member_id, iteration, reason)
            return
        try:
            await self.flow.review(
                task.id, Actor(member_id=member_id), verdict, iteration=iteration
            )
        except (ConflictError, PermissionDeniedError) as exc:  # decided meanwhile
            log.info("circle review not needed any more", task_id=task.id, reason=str(exc))
