"""The seed's memory examples, as written."""


class TestAgentMemory:
    """Tests for agent memory functionality."""

    def test_memory_stores_messages(self, agent):
        """Test that messages are stored."""
        agent.process_message("Hello")
        history = agent.memory.get_history()
        assert len(history) >= 1

    def test_memory_clears(self, agent):
        """Test memory clearing."""
        agent.process_message("Hello")
        agent.memory.clear()
        assert len(agent.memory.get_history()) == 0
