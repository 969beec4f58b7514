"""A cloned project keeps and shows where it came from, never the credentials in that URL."""

from __future__ import annotations

import pytest

from gathering.projects.lifecycle import _without_credentials


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://user:token@git.example.com/org/app.git", "https://git.example.com/org/app.git"),
        ("https://token@git.example.com/app", "https://git.example.com/app"),
        ("https://git.example.com/app", "https://git.example.com/app"),
        ("/srv/repos/app", "/srv/repos/app"),
        ("file:///srv/repos/app", "file:///srv/repos/app"),
    ],
)
def test_the_source_is_kept_without_credentials(given: str, kept: str) -> None:
    assert _without_credentials(given) == kept
