"""Hostile review: the circles CLI."""

from typer.testing import CliRunner

from gathering.cli import app


def test_a_skill_level_that_is_a_unicode_digit_is_a_clear_error_not_a_traceback() -> None:
    for command in (
        ["circles", "add", "team", "ann", "--skill", "python=²"],
        ["circles", "task", "team", "t", "--needs", "python=²"],
    ):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1
        assert not isinstance(result.exception, ValueError), repr(result.exception)
