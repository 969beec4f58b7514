"""The model layer: neutral message / tool-call / usage types, the `LLMProvider` protocol, the
Anthropic, OpenAI (and OpenAI-compatible), Ollama, local and scripted providers, and
embeddings.

A provider given `client=` (an SDK client built by the caller) uses it as-is. Otherwise the
SDK client factories `anthropic_client`, `openai_client` and `ollama_client` are looked up
here when a provider builds its client, so patching them (e.g.
``patch("gathering.llm.anthropic_client")``) swaps the client every provider uses.

Every provider reports its `context_window` and can `count_tokens`; `estimate_tokens` gives
the same estimate with no provider at hand.
"""

from gathering.llm.anthropic import AnthropicProvider
from gathering.llm.anthropic import create_anthropic_client as anthropic_client
from gathering.llm.base import BaseProvider, GenerationOptions, LLMProvider
from gathering.llm.context_windows import default_context_window
from gathering.llm.embeddings import (
    EmbeddingProvider,
    LocalEmbeddingProvider,
    OllamaEmbeddingProvider,
    OpenAIEmbeddingProvider,
)
from gathering.llm.local import LocalProvider, close_models, local_model_available
from gathering.llm.ollama import OllamaProvider
from gathering.llm.ollama import create_ollama_client as ollama_client
from gathering.llm.openai import OpenAIProvider
from gathering.llm.openai import create_openai_client as openai_client
from gathering.llm.pricing import UsageLedger, estimate_cost, price_for
from gathering.llm.registry import (
    default_model,
    default_provider_name,
    get_embedding_provider,
    get_provider,
    known_providers,
    register_provider,
)
from gathering.llm.retry import RetryPolicy
from gathering.llm.scripted import ScriptedCall, ScriptedProvider, tool_call
from gathering.llm.token_estimate import estimate_tokens
from gathering.llm.types import (
    Completion,
    Message,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolResult,
    ToolSpec,
    Usage,
    UsageEvent,
)

__all__ = [
    "AnthropicProvider",
    "BaseProvider",
    "Completion",
    "EmbeddingProvider",
    "GenerationOptions",
    "LLMProvider",
    "LocalEmbeddingProvider",
    "LocalProvider",
    "Message",
    "OllamaEmbeddingProvider",
    "OllamaProvider",
    "OpenAIEmbeddingProvider",
    "OpenAIProvider",
    "RetryPolicy",
    "ScriptedCall",
    "ScriptedProvider",
    "StreamDone",
    "StreamEvent",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolResult",
    "ToolSpec",
    "Usage",
    "UsageEvent",
    "UsageLedger",
    "anthropic_client",
    "close_models",
    "default_context_window",
    "default_model",
    "default_provider_name",
    "estimate_cost",
    "estimate_tokens",
    "get_embedding_provider",
    "get_provider",
    "known_providers",
    "local_model_available",
    "ollama_client",
    "openai_client",
    "price_for",
    "register_provider",
    "tool_call",
]
