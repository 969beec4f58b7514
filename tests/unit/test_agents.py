"""The seed's agent examples, as written, plus the behaviour they imply."""

from unittest.mock import AsyncMock, Mock, patch

import pytest

from gathering.agents import Agent

pytestmark = pytest.mark.usefixtures("llm_stub_env")


def test_create_agent():
    """Test basic agent creation."""
    # Arrange
    config = {"name": "TestAgent", "provider": "openai", "model": "gpt-4o"}
    # Act
    agent = Agent.from_config(config)
    # Assert
    assert agent.name == "TestAgent"
    assert agent.provider == "openai"
    assert agent.model == "gpt-4o"


@pytest.mark.asyncio
async def test_agent_process_message():
    """Test async message processing."""
    agent = Agent(name="Test", provider="anthropic", model="claude-sonnet-4-20250514")
    response = await agent.process_message("Hello")
    assert response is not None
    assert len(response) > 0


@pytest.mark.parametrize(
    "provider,model,expected_class",
    [
        ("openai", "gpt-4o", "OpenAIProvider"),
        ("anthropic", "claude-sonnet-4-20250514", "AnthropicProvider"),
        ("ollama", "llama3.2", "OllamaProvider"),
    ],
)
def test_provider_initialization(provider, model, expected_class):
    """Test provider initialization."""
    agent = Agent(name="Test", provider=provider, model=model)
    assert agent.llm_provider.__class__.__name__ == expected_class


def test_with_factory(agent_factory):
    agent1 = agent_factory(name="Agent1")
    agent2 = agent_factory(name="Agent2", provider="openai", model="gpt-4o")
    assert (agent1.name, agent1.provider) == ("Agent1", "ollama")
    assert (agent2.name, agent2.provider, agent2.model) == ("Agent2", "openai", "gpt-4o")


def test_with_mock():
    mock_llm = Mock()
    mock_llm.generate.return_value = "Mocked response"
    agent = Agent(name="Test", provider="openai", model="gpt-4o", llm=mock_llm)
    response = agent.process_message("Hello")
    assert response == "Mocked response"
    mock_llm.generate.assert_called_once()


@patch("gathering.agents.llm_client")
def test_with_patch(mock_client):
    mock_client.generate.return_value = Mock(content=[Mock(text="Response")])
    agent = Agent(name="Test", provider="anthropic", model="claude-sonnet-4-20250514")
    response = agent.process_message("Hello")
    assert response == "Response"


@pytest.mark.asyncio
async def test_async_mock():
    mock_db = AsyncMock()
    mock_db.fetch_one.return_value = {"id": 1, "name": "Test"}
    result = await mock_db.fetch_one("SELECT * FROM agents WHERE id = 1")
    assert result["name"] == "Test"


def test_agent_has_name():
    agent = Agent(name="Test")
    assert agent.name == "Test"


def test_agent_has_default_provider():
    agent = Agent(name="Test")
    assert agent.provider == "anthropic"  # default provider


def test_agent_raises_error_when_name_is_empty():
    with pytest.raises(ValueError):
        Agent(name="")
