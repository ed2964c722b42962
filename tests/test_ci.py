"""The test command (scripts/test.sh: the README's, and what .ci/run calls) lints the tree with
ruff, through the locked environment, before pytest runs (issue #13, part 4)."""

from __future__ import annotations

from tests.conftest import REPO

TEST_SH = REPO / "scripts" / "test.sh"


def test_the_test_command_runs_ruff_check_and_format_check_before_pytest():
    script = TEST_SH.read_text()
    runs = [line for line in script.splitlines() if line.startswith(("uv run", "exec uv run"))]
    assert runs == [
        "uv run --frozen ruff check .",
        "uv run --frozen ruff format --check .",
        'exec uv run --frozen pytest -n "${TLMED_TEST_WORKERS:-2}" --dist loadfile "$@"',
    ]
    assert "set -euo pipefail" in script  # a ruff finding stops the run before pytest


def test_ci_and_readme_use_that_test_command():
    assert "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in (REPO / "README.md").read_text()
