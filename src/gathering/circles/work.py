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
    BudgetExceededError,
    ConflictError,
    GatheringError,
    NotFoundError,
    PermissionDeniedError,
    TurnFailedError,
)
from gathering.events import EventBus
from gathering.llm import TextDelta
from gathering.pipelines.handlers import json_part
from gathering.projects import project_of_circle
from gathering.usage import attributed, current_attribution
from gathering.usage.budgets import larger_than_its_budget, refusal_of, reset_of

log = structlog.get_logger(__name__)
MAX_SUMMARY = 300
MAX_SUBMISSION = 80_000  # characters of a reply handed in (Submission.text's limit)
BUSY_RETRY_SECONDS = 5.0  # an agent busy in another turn is asked again this much later
MAX_RERUNS = 5  # turns of one attempt cut short by a crash, run again at most
BUDGET_RECHECK_SECONDS = 300.0  # work a budget refused looks again this often (or at reset)
MAX_BUDGET_REFUSALS = 3
"""Turns of one attempt a budget may refuse: past that (the look said the call fits, but the
turn's earlier calls use the room up again each time), the attempt fails."""
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
    """Agent member `member`, working in the circle's workspace: the directory of the project
    the circle is linked to, else the circle's own."""
    store = PostgresAgentStore(db)
    assert member.agent_id is not None
    agent = Agent.from_record(await store.load_agent(member.agent_id), store=store)
    agent.event_bus = bus
    project = await project_of_circle(db, circle.id)
    agent.workspace = project.directory if project is not None else circle.workspace
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
        agent = await circle_agent(self.db, self.bus, circle, member)
        with attributed(circle_id=circle.id):  # its calls are charged to the circle too
            result = await run_agent_turn(agent, prompt, key)
        if not result.replayed:
            tokens = result.usage.input_tokens + result.usage.output_tokens
            await self.db.execute(SQL["count_work"], member.id, tokens, time.monotonic() - started)
        return result

    async def work(
        self,
        task_id: int,
        iteration: int,
        member_id: int,
        budget_waits: int = 0,
        estimate: list[float] | None = None,
    ) -> None:
        """Member `member_id` (an agent) works attempt `iteration` of task `task_id`, when it
        is still theirs to do; a job of an attempt that is over (or of a task, a member that
        is gone) does nothing. An agent busy in another turn tries again a little later.
        Work a budget refused (`budget_waits` times so far) waits in the member's hands: it
        runs again once the budget can take the refused call's `estimate` (USD, tokens)."""
        try:
            await self._work(task_id, iteration, member_id, budget_waits, estimate)
        except NotFoundError as exc:
            log.info("circle work not needed any more", task_id=task_id, reason=str(exc))
        except AgentBusyError:
            waiting = {"budget_waits": budget_waits, "estimate": estimate} if estimate else {}
            await self._later(WORK, task_id, iteration, member_id, **waiting)

    async def review(self, task_id: int, iteration: int, member_id: int) -> None:
        """Member `member_id` (an agent) reviews attempt `iteration` of task `task_id`, when it
        still waits for their verdict. An answer that is no verdict goes up to a lead."""
        try:
            await self._review(task_id, iteration, member_id)
        except NotFoundError as exc:
            log.info("circle review not needed any more", task_id=task_id, reason=str(exc))
        except AgentBusyError:
            await self._later(REVIEW, task_id, iteration, member_id)

    async def _later(
        self, job: str, task_id: int, iteration: int, member_id: int, **extra: Any
    ) -> None:
        member = await get_member(
            self.db, (await get_circle_task(self.db, task_id)).circle_id, member_id
        )
        at = datetime.now(UTC) + timedelta(seconds=BUSY_RETRY_SECONDS)
        async with self.db.transaction() as tx:
            await agent_job(tx, job, task_id, iteration, member, at=at, **extra)

    async def _work(
        self,
        task_id: int,
        iteration: int,
        member_id: int,
        budget_waits: int,
        estimate: list[float] | None,
    ) -> None:
        task = await self.flow.start_attempt(task_id, member_id, iteration)
        if task is None:
            return
        circle = await get_circle(self.db, task.circle_id)
        member = await get_member(self.db, circle.id, member_id)
        if member.agent_id is None:
            return  # its agent was deleted: the offers duty moves the task on
        actor = Actor(member_id=member_id)
        if estimate is not None and (
            refused := await self._budget_refusal(circle, member, estimate)
        ):
            # Still refused: no turn (it would only be refused again), and no new event.
            await self._wait_for_budget(task.id, member, iteration, refused, budget_waits, False)
            return
        # A new key after each refusal: the refused turn is stored, failed, under the last.
        key = f"circle:{task.id}:{iteration}" + (f":budget{budget_waits}" if budget_waits else "")
        try:
            result = await self._turn(circle, member, work_prompt(circle, member, task), key)
        except AgentBusyError:
            raise
        except BudgetExceededError as exc:  # not a failure: it waits for a raised budget
            if budget_waits + 1 < MAX_BUDGET_REFUSALS and not larger_than_its_budget(exc):
                await self._wait_for_budget(task.id, member, iteration, exc, budget_waits + 1, True)
                return
            error = f"the agent's turn failed: {exc}"  # waiting would not help
            await self.flow.fail(task.id, actor, error, iteration=iteration)
            return
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

    async def _budget_refusal(
        self, circle: CircleRecord, member: MemberRecord, estimate: list[float]
    ) -> BudgetExceededError | None:
        """What the budgets of the member's turn answer the refused call now (a look)."""
        assert member.agent_id is not None
        agent = await PostgresAgentStore(self.db).load_agent(member.agent_id)
        charged = current_attribution().merged(
            user_id=agent.owner_id, agent_id=member.agent_id, circle_id=circle.id
        )
        usd, tokens = (float(estimate[0]), int(estimate[1])) if len(estimate) == 2 else (0, 0)
        return await refusal_of(self.db, charged, usd, tokens)

    async def _wait_for_budget(
        self,
        task_id: int,
        member: MemberRecord,
        iteration: int,
        refusal: BudgetExceededError,
        waits: int,
        announce: bool,
    ) -> None:
        """Ask again at the budget's reset, or in `BUDGET_RECHECK_SECONDS` (a raised budget)."""
        at = datetime.now(UTC) + timedelta(seconds=BUDGET_RECHECK_SECONDS)
        resets = reset_of(refusal)
        if resets is not None:
            at = min(at, resets)
        log.info("circle task waits for a budget", task_id=task_id, retry_at=at.isoformat())
        await self.flow.wait_for_budget(
            task_id, member, iteration, refusal, waits, at, announce=announce
        )

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
