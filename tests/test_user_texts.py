"""What a user reads says what the tool does now, not how it came to be.

No issue numbers and no session words in the README, the guides in docs/, any entry point's
``--help``, or the strings the package prints (error messages, the banner, flag help): those
are read by people outside this repository. History and dated measurements belong in
experiments/. Docstrings and comments are for developers and are not checked here (a
``__main__`` module's docstring is, through ``--help``).
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

from tests.test_readme_commands import helps

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "tlmed_keras"
DEVELOPMENT_WORDS = re.compile(r"\bissues?\s*#?\s*\d+|#\d+\b|\bsessions?\b", re.IGNORECASE)
USER_DOCS = ("README.md", *(f"docs/{p.name}" for p in sorted((REPO / "docs").glob("*.md"))))
ENTRY_POINTS = tuple(f"tlmed_keras.{p.parent.name}" for p in sorted(PACKAGE.glob("*/__main__.py")))


def development_words(text: str) -> list[str]:
    """Each line of ``text`` that names an issue or a session, stripped."""
    return [line.strip() for line in text.splitlines() if DEVELOPMENT_WORDS.search(line)]


def _printed_strings(path: pathlib.Path) -> list[str]:
    """The string constants of a module that are not docstrings (messages, help, banner)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_the_pattern_finds_what_it_should_and_nothing_else():
    found = development_words(
        "fixed in issue #12\nissue 8 measured\nsee #14\nthis session\nthe issue's goal\n"
        "this_session_s\nplain text"
    )
    assert found == ["fixed in issue #12", "issue 8 measured", "see #14", "this session"]


@pytest.mark.parametrize("doc", USER_DOCS)
def test_user_docs_carry_no_development_words(doc):
    assert development_words((REPO / doc).read_text()) == [], doc


def test_printed_strings_carry_no_development_words():
    found = [
        f"{path.relative_to(REPO)}: {line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for text in _printed_strings(path)
        for line in development_words(text)
    ]
    assert found == []


def test_help_texts_carry_no_development_words():
    assert len(ENTRY_POINTS) >= 8, ENTRY_POINTS  # data, models, train, evaluate, ...
    texts = helps()  # --helpfull of every module the docs use: each entry point is one
    assert set(ENTRY_POINTS) <= set(texts), sorted(set(ENTRY_POINTS) - set(texts))
    for module in ENTRY_POINTS:
        code, text = texts[module]
        assert code == 0 and "--" in text, f"{module} --helpfull: {text[-500:]}"
    found = {module: development_words(texts[module][1]) for module in ENTRY_POINTS}
    assert found == {module: [] for module in ENTRY_POINTS}
