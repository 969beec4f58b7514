"""The environment of git as a person runs it in tests: an identity, no system or global
configuration, and any owner's repository accepted (the server's git runs in the sandbox, so
the files it writes belong to the sandbox's uid, not to the user running the tests)."""

from __future__ import annotations

import os
from pathlib import Path


def person_git_env(home: Path) -> dict[str, str]:
    """git's whole environment for set-up and control runs, with `home` as HOME."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "safe.directory",
        "GIT_CONFIG_VALUE_0": "*",
        "GIT_AUTHOR_NAME": "Tester",
        "GIT_AUTHOR_EMAIL": "tester@example.com",
        "GIT_COMMITTER_NAME": "Tester",
        "GIT_COMMITTER_EMAIL": "tester@example.com",
    }
