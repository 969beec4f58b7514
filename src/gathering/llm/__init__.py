"""The model layer: neutral message / tool-call / usage types, the `LLMProvider` protocol, the
Anthropic, OpenAI (and OpenAI-compatible), Ollama, local and scripted providers, and
embeddings.

The SDK client factories `anthropic_client`, `openai_client` and `ollama_client` are looked
up here when a provider builds its client, so patching them (e.g.
``patch("gathering.llm.anthropic_client")``) swaps the client every provider uses.
"""

from gathering.llm.anthropic import AnthropicProvider
from gathering.llm.anthropic import create_anthropic_client as anthropic_client
from gathering.llm.base import BaseProvider, GenerationOptions, LLMProvider
from gathering.llm.embeddings import (
    EmbeddingProvider,
    LocalEmbeddingProvider,
    OllamaEmbeddingProvider,
    OpenAIEmbeddingProvider,
)
from gathering.llm.local import LocalProvider, local_model_available
from gathering.llm.ollama import OllamaProvider
from gathering.llm.ollama import create_ollama_client as ollama_client
from gathering.llm.openai import OpenAIProvider
from gathering.llm.openai import create_openai_client as openai_client
from gathering.llm.pricing import PRICES, UsageLedger, estimate_cost
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
    "PRICES",
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
    "default_model",
    "default_provider_name",
    "estimate_cost",
    "get_embedding_provider",
    "get_provider",
    "known_providers",
    "local_model_available",
    "ollama_client",
    "openai_client",
    "register_provider",
    "tool_call",
]
