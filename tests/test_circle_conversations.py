"""Circles' conversations on a real worker, the model faked at the HTTP wire (the LLM stub,
Ollama's format): who speaks when under each strategy (round_robin, mention, facilitator with
its fallback, free and its seed), the limits (turns, tokens, a stop phrase, consensus), the
control (pause, resume, cancel, a person's message injected), the stored transcript, the
summary, and the events of each turn on the circle's subject."""

from __future__ import annotations

from typing import Any

import pytest
from circle_lab import CircleLab, circle_lab
from task_runtime import until

from gathering.circles import (
    ConversationIn,
    Conversations,
    create_conversation,
    get_conversation,
    transcript,
)
from gathering.circles.strategies import Speaker, free, mention, named_in, pick_named
from gathering.errors import ConflictError
from gathering.testing.wire_requests import last_user_text

pytestmark = pytest.mark.integration
lab = circle_lab  # the fixture, by the name these tests use
ENDED = ("finished", "cancelled", "failed")


async def _conversation(
    lab: CircleLab, *names: str, roles: dict[str, str] | None = None, **spec: Any
) -> tuple[Conversations, int]:
    circle = await lab.circle()
    ids = []
    for name in names:
        member = await lab.member(circle, name, (roles or {}).get(name, "member"))
        ids.append(member.id)
    spec.setdefault("participants", ids)
    async with lab.db.transaction() as tx:
        found = await create_conversation(
            tx, circle, ConversationIn(topic="the plan", **spec), lab.owner_id
        )
    return Conversations(lab.db, lab.bus), found.id


async def _run(lab: CircleLab, conversations: Conversations, conversation_id: int) -> Any:
    await lab.start_worker()
    await conversations.start(conversation_id)
    return await _ended(lab, conversation_id)


async def _ended(lab: CircleLab, conversation_id: int) -> Any:
    async def done() -> bool:
        return (await get_conversation(lab.db, conversation_id)).status in ENDED

    await until("ended", done, limit=30)
    return await get_conversation(lab.db, conversation_id)


async def _speakers(lab: CircleLab, conversation_id: int) -> list[str]:
    return [m["speaker"] for m in await transcript(lab.db, conversation_id) if m["turn"]]


async def test_round_robin_speaks_in_order_until_the_turns_run_out(lab: CircleLab) -> None:
    conversations, cid = await _conversation(lab, "ann", "bob", "cat", max_turns=5)
    lab.stub.add_reply("a1", "b1", "c1", "a2", "b2", "the summary")
    ended = await _run(lab, conversations, cid)
    assert (ended.status, ended.finish_reason, ended.turns) == ("finished", "max_turns", 5)
    assert await _speakers(lab, cid) == ["ann", "bob", "cat", "ann", "bob"]
    assert [m["content"] for m in await transcript(lab.db, cid)] == ["a1", "b1", "c1", "a2", "b2"]
    assert ended.summary == "the summary"
    assert ended.tokens > 0
    prompts = [last_user_text((r.json or {}).get("messages") or []) for r in lab.stub.requests]
    assert "ann: a1" in prompts[1] and "the plan" in prompts[1]  # bob read ann
    assert "Summarize" in prompts[-1] and "bob: b2" in prompts[-1]
    await until("delivered", lambda: _seen(lab, "conversation.finished"))
    kinds = [e.type for e in lab.events if e.type.startswith("conversation.")]
    assert kinds.count("conversation.turn_started") == 5
    assert kinds.count("conversation.turn_finished") == 5
    assert kinds.count("conversation.delta") >= 5
    deltas = "".join(
        e.data["text"] for e in lab.events if e.type == "conversation.delta" and e.data["turn"] == 3
    )
    assert deltas == "c1"
    assert kinds.index("conversation.turn_started") < kinds.index("conversation.delta")
    finished = next(e for e in lab.events if e.type == "conversation.finished")
    assert (finished.data["reason"], finished.data["summary"]) == ("max_turns", "the summary")
    assert finished.subject == "circle:team"


async def _seen(lab: CircleLab, kind: str) -> bool:
    return any(e.type == kind for e in lab.events)


async def test_mention_hands_the_word_to_whoever_is_named(lab: CircleLab) -> None:
    conversations, cid = await _conversation(
        lab, "ann", "bob", "cat", strategy="mention", max_turns=4
    )
    lab.stub.add_reply("@cat what do you think?", "I think @ann should decide", "fine", "ok")
    await _run(lab, conversations, cid)
    # ann opens (no one named yet), cat was named, then ann, then no one: after ann, bob.
    assert await _speakers(lab, cid) == ["ann", "cat", "ann", "bob"]
    why = [e.data["why"] for e in lab.events if e.type == "conversation.turn_started"]
    assert why[1] == "@cat was named" and "next in order" in why[3]
    await until("delivered", lambda: _mentioned(lab, 2))
    mentioned = [
        (e.data["n"], e.data["member"], e.data["by"])
        for e in lab.events
        if e.type == "conversation.mentioned"
    ]
    assert mentioned == [(1, "cat", "ann"), (2, "ann", "cat")]


async def _mentioned(lab: CircleLab, count: int) -> bool:
    return sum(e.type == "conversation.mentioned" for e in lab.events) >= count


async def test_the_facilitator_picks_and_a_bad_pick_falls_back(lab: CircleLab) -> None:
    conversations, cid = await _conversation(
        lab, "ann", "bob", "boss", roles={"boss": "lead"}, strategy="facilitator", max_turns=3
    )
    participants = (await get_conversation(lab.db, cid)).participants
    async with lab.db.transaction() as tx:  # the lead facilitates but does not speak
        await tx.execute(
            "UPDATE circle.conversations SET participants = $2 WHERE id = $1", cid, participants[:2]
        )
    lab.stub.add_reply("Bob", "b1", "nobody in particular", "a1", "bob, then", "b2")
    await _run(lab, conversations, cid)
    assert await _speakers(lab, cid) == ["bob", "ann", "bob"]
    why = [e.data["why"] for e in lab.events if e.type == "conversation.turn_started"]
    assert why[0] == "the facilitator chose bob"
    assert "named no participant" in why[1]


async def test_free_is_reproducible_from_its_seed(lab: CircleLab) -> None:
    speakers = [Speaker(n, name) for n, name in enumerate(["ann", "bob", "cat", "dan"], 1)]
    runs = []
    for _ in range(2):
        last = None
        order = []
        for turn in range(1, 13):
            chosen = free(speakers, 7, turn, last)
            assert chosen.member_id != last
            order.append(chosen.name)
            last = chosen.member_id
        runs.append(order)
    assert runs[0] == runs[1]
    assert len(set(runs[0])) > 1
    conversations, cid = await _conversation(
        lab, "ann", "bob", "cat", strategy="free", seed=7, max_turns=4
    )
    await _run(lab, conversations, cid)
    said = await _speakers(lab, cid)
    participants = (await get_conversation(lab.db, cid)).participants
    names = dict(zip(participants, ["ann", "bob", "cat"], strict=True))
    expected, last = [], None
    for turn in range(1, 5):
        chosen = free([Speaker(m, names[m]) for m in participants], 7, turn, last)
        expected.append(chosen.name)
        last = chosen.member_id
    assert said == expected


async def test_a_stop_phrase_ends_it(lab: CircleLab) -> None:
    conversations, cid = await _conversation(
        lab, "ann", "bob", stop_phrase="we are done", max_turns=9
    )
    lab.stub.add_reply("first", "We are DONE here.")
    ended = await _run(lab, conversations, cid)
    assert (ended.finish_reason, ended.turns) == ("stop_phrase", 2)


async def test_consensus_ends_it_when_every_speaker_agrees(lab: CircleLab) -> None:
    conversations, cid = await _conversation(lab, "ann", "bob", consensus=True, max_turns=9)
    lab.stub.add_reply("AGREED", "not yet", "still AGREED", "fine. AGREED")
    ended = await _run(lab, conversations, cid)
    assert (ended.finish_reason, ended.turns) == ("consensus", 4)


async def test_the_token_budget_ends_it(lab: CircleLab) -> None:
    conversations, cid = await _conversation(lab, "ann", "bob", token_budget=1, max_turns=9)
    lab.stub.add_reply("a long first word")
    ended = await _run(lab, conversations, cid)
    assert (ended.finish_reason, ended.turns) == ("token_budget", 1)


async def test_pause_resume_inject_and_cancel(lab: CircleLab) -> None:
    conversations, cid = await _conversation(lab, "ann", "bob", max_turns=9)
    await lab.start_worker()
    lab.stub.add_reply("a1")
    await conversations.start(cid)

    async def one_turn() -> bool:
        return (await get_conversation(lab.db, cid)).turns >= 1

    await until("a turn", one_turn)
    await conversations.pause(cid)
    with pytest.raises(ConflictError, match="paused"):
        await conversations.pause(cid)
    settled = (await get_conversation(lab.db, cid)).turns
    assert settled <= 2  # at most the turn being said when it paused
    message = await conversations.inject(cid, lab.owner_id, "owner", "Consider the budget, @bob.")
    assert message["turn"] is None
    await until("mentioned", lambda: _mentioned(lab, 1))
    [mention_event] = [e for e in lab.events if e.type == "conversation.mentioned"]
    assert (mention_event.data["member"], mention_event.data["by"]) == ("bob", "owner")
    lab.stub.add_reply("b-after", "a-after", "b3")
    await conversations.resume(cid)

    async def read_the_person() -> bool:
        return any(
            "owner: Consider the budget, @bob."
            in last_user_text((r.json or {}).get("messages") or [])
            for r in lab.stub.requests
        )

    await until("a speaker read the injected message", read_the_person)
    await conversations.cancel(cid)
    ended = await _ended(lab, cid)
    assert (ended.status, ended.finish_reason) == ("cancelled", "cancelled")
    with pytest.raises(ConflictError):
        await conversations.inject(cid, lab.owner_id, "owner", "too late")
    ns = [m["n"] for m in await transcript(lab.db, cid)]
    assert ns == list(range(1, len(ns) + 1))  # no gap, no duplicate


async def test_participants_must_be_active_agent_members(lab: CircleLab) -> None:
    circle = await lab.circle()
    ann = await lab.member(circle, "ann")
    async with lab.db.transaction() as tx:
        with pytest.raises(ConflictError, match="cannot speak"):
            await create_conversation(
                tx, circle, ConversationIn(topic="x", participants=[ann.id + 99]), None
            )
        with pytest.raises(ConflictError, match="facilitate"):
            await create_conversation(
                tx, circle, ConversationIn(topic="x", strategy="facilitator"), None
            )
        made = await create_conversation(tx, circle, ConversationIn(topic="x"), None)
    assert made.participants == [ann.id] and made.status == "created"


def test_names_and_mentions_are_read_as_words() -> None:
    people = [Speaker(1, "ann"), Speaker(2, "anne"), Speaker(3, "bob")]
    assert [s.name for s in named_in("@anne and @bob", people, at_sign=True)] == ["anne", "bob"]
    assert named_in("joanne", people, at_sign=False) == []
    assert mention(people, "hey @BOB", 1)[0].name == "bob"
    assert mention(people, "hey @ann", 1)[0].name == "anne"  # not oneself: next in order
    assert pick_named("I pick Bob.", people, None)[0].name == "bob"
    assert pick_named("Ann", people, 1)[0].name == "anne"  # named the last speaker: fallback
