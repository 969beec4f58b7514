"""The test kit: test your agents offline, as GatheRing's own suite does (docs/testing.md).

- `ScriptedProvider` answers from a script (texts, `tool_call(...)`s, exceptions, or a
  function of the messages) and records each call in `calls`; no wire, no network.
- `LLMStubServer` is a local HTTP server that answers like Anthropic, OpenAI and Ollama, at
  their real wire shapes, so the real providers and SDKs run against it: queued replies
  (`add_reply`) or raw payloads (`add_json`, `add_sse`, `add_ndjson`), else an echo of the last
  user message; it refuses what the real APIs refuse.
- `RequestGate` is a proxy in front of it that a test closes to make a model call wait.

Nothing here needs pytest; no module of `gathering` imports this one.
"""

from gathering.llm.scripted import ScriptedCall, ScriptedProvider, ScriptedReply, tool_call
from gathering.testing.llm_stub_server import Hold, LLMStubServer, StubReply
from gathering.testing.request_gate import RequestGate
from gathering.testing.wire_replies import StubResponse
from gathering.testing.wire_requests import StubRequest

__all__ = [
    "Hold",
    "LLMStubServer",
    "RequestGate",
    "ScriptedCall",
    "ScriptedProvider",
    "ScriptedReply",
    "StubReply",
    "StubRequest",
    "StubResponse",
    "tool_call",
]
