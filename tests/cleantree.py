"""A pytest plugin: a run that leaves an untracked file in the checkout fails.

At the start of the session it asks git for the untracked, non-ignored files under pytest's
root folder (``git ls-files --others --exclude-standard``: what ``git status --porcelain
--untracked-files=all`` lists as ``??``); at the end it asks again. Any path found only at the
end is listed in the terminal summary, and a run that passed exits with status 1 instead.
Files that were there before the run, ignored files and changes to tracked files are not its
business. Without git, or outside a git work tree, it does nothing.

tests/conftest.py runs these hooks for the suite; ``pytest -p tests.cleantree`` runs them
anywhere (tests/surface/test_clean_tree.py does, in a scratch repository).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

__all__ = [
    "pytest_sessionfinish",
    "pytest_sessionstart",
    "pytest_terminal_summary",
    "untracked_files",
]

_AT_START = pytest.StashKey[frozenset[str]]()
_LEFT = pytest.StashKey[list[str]]()


def untracked_files(root: Path) -> frozenset[str] | None:
    """The untracked, non-ignored files under ``root``, relative to it; None when git cannot
    tell (no git, not a work tree, git failed)."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run(
            [git, "ls-files", "--others", "--exclude-standard", "-z"],
            cwd=root, capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return frozenset(os.fsdecode(path) for path in done.stdout.split(b"\0") if path)


def pytest_sessionstart(session: pytest.Session) -> None:
    if hasattr(session.config, "workerinput"):
        return  # a pytest-xdist worker: the controller checks the whole run
    found = untracked_files(session.config.rootpath)
    if found is not None:
        session.config.stash[_AT_START] = found


def pytest_sessionfinish(session: pytest.Session) -> None:
    before = session.config.stash.get(_AT_START, None)
    if before is None:
        return
    after = untracked_files(session.config.rootpath)
    if after is None:
        return
    left = sorted(after - before)
    if not left:
        return
    session.config.stash[_LEFT] = left
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if session.config.pluginmanager.get_plugin("terminalreporter") is None:
        print("\n".join(_report(session.config, left)), file=sys.stderr)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    left = terminalreporter.config.stash.get(_LEFT, None)
    if left:
        terminalreporter.write_sep("=", "untracked files left in the checkout", red=True)
        for line in _report(terminalreporter.config, left):
            terminalreporter.write_line(line)


def _report(config: pytest.Config, left: list[str]) -> list[str]:
    return [
        f"the run left {len(left)} untracked file(s) in {config.rootpath}",
        "(tests must write under pytest's temporary folder: tmp_path, temp_dir()):",
        *(f"  {path}" for path in left),
    ]
