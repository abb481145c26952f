"""A run that leaves an untracked file in the checkout fails (tests/cleantree.py, which
tests/conftest.py runs for this suite). Each test runs pytest of its own with that plugin, in
a scratch git repository, on one test that writes files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent.parent

LEAVES_FILES = """\
from pathlib import Path

def test_writes(tmp_path):
    (tmp_path / "fine.txt").write_text("under pytest's temporary folder")
    Path("ignored").mkdir()
    Path("ignored", "fine.txt").write_text("ignored by the repository")
    Path("before.txt").write_text("was untracked before the run")
    Path("left.txt").write_text("new and untracked")
    Path("deep", "er").mkdir(parents=True)
    Path("deep", "er", "left.txt").write_text("new and untracked, in a new folder")
"""

LEAVES_NOTHING = """\
from pathlib import Path

def test_writes(tmp_path):
    (tmp_path / "fine.txt").write_text("under pytest's temporary folder")
    Path("ignored").mkdir()
    Path("ignored", "fine.txt").write_text("ignored by the repository")
    Path("before.txt").write_text("was untracked before the run")
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git work tree with an ignore rule and one untracked file, ``before.txt``."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the check does nothing without it")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=git_free_env(repo))
    (repo / "pytest.ini").write_text("[pytest]\n")
    (repo / ".gitignore").write_text("ignored/\n__pycache__/\n")
    (repo / "before.txt").write_text("untracked before the run\n")
    return repo


def git_free_env(repo: Path) -> dict[str, str]:
    """The environment without GIT_* settings, git confined to ``repo``'s folder."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GIT_")}
    env["GIT_CEILING_DIRECTORIES"] = str(repo.parent)
    return env


def inner_run(folder: Path, test: str, **env: str) -> subprocess.CompletedProcess[str]:
    (folder / "test_inner.py").write_text(test)
    environment = git_free_env(folder)
    environment.update(PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1", **env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.cleantree",
         "test_inner.py"],
        cwd=folder, capture_output=True, text=True, timeout=120, check=False, env=environment,
    )  # fmt: skip


def test_new_untracked_files_fail_the_run_and_are_listed(repo: Path) -> None:
    done = inner_run(repo, LEAVES_FILES)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert "untracked files left in the checkout" in done.stdout
    listed = [line.strip() for line in done.stdout.splitlines() if line.startswith("  ")]
    assert listed == ["deep/er/left.txt", "left.txt"], done.stdout


def test_ignored_files_and_files_there_before_do_not_count(repo: Path) -> None:
    done = inner_run(repo, LEAVES_NOTHING)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "untracked" not in done.stdout


def test_a_failed_run_keeps_its_status(repo: Path) -> None:
    done = inner_run(repo, LEAVES_FILES + "    assert False\n")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed" in done.stdout and "left.txt" in done.stdout


def test_without_git_or_outside_a_work_tree_nothing_is_checked(repo: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    done = inner_run(plain, LEAVES_FILES)
    assert done.returncode == 0, done.stdout + done.stderr
    empty = tmp_path / "no-git-here"
    empty.mkdir()
    done = inner_run(repo, LEAVES_FILES, PATH=str(empty))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "untracked" not in done.stdout
