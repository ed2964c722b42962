"""Every command in the README and docs/ works as written (issue #16 item 1).

Each ``python -m MODULE ...`` command found in a code span or block of README.md,
docs/*.md and experiments/README.md must name a module that exists, whose ``--helpfull``
runs and lists every ``--flag`` the command uses; a ``--flagfile=PATH`` must exist. In
README.md and docs/ the commands must start with ``uv run`` (they are pasted after the set-up
commands, without an activated environment), and console scripts run that way (tensorboard,
saved_model_cli) must be installed in the environment. Each module's help runs once, all in
parallel (absl's help start-up is ~1 s; TensorFlow is not imported by ``--helpfull``).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
UV_RUN_DOCS = ("README.md", *(f"docs/{p.name}" for p in sorted((REPO / "docs").glob("*.md"))))
DOCS = (*UV_RUN_DOCS, "experiments/README.md")
CONSOLE_SCRIPTS = ("tensorboard", "saved_model_cli")
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)
INLINE = re.compile(r"`([^`\n]+)`")
MODULE = re.compile(r"python -m ([\w.]+)(.*)")
PLACEHOLDER = re.compile(r"\.[A-Z]$")  # tlmed_keras.X in prose about "any entry point"


def _snippets(text: str) -> list[str]:
    """Code blocks (continuation lines joined, comments dropped) and inline code spans."""
    out = []
    for block in FENCE.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        out += [line.split(" #")[0] for line in joined.splitlines()]
    out += INLINE.findall(FENCE.sub("", text))
    return [s.strip() for s in out if s.strip()]


@functools.cache
def commands() -> list[tuple[str, str, str, list[str]]]:
    """``(doc, snippet, module, flags)`` of every ``python -m`` command in the docs."""
    found = []
    for doc in DOCS:
        for snippet in _snippets((REPO / doc).read_text()):
            for match in MODULE.finditer(snippet):
                module, rest = match.group(1), match.group(2).split(" python -m ")[0]
                if PLACEHOLDER.search(module):
                    continue
                flags = re.findall(r"(?<![\w-])--([a-z_][a-z0-9_]*)", rest)
                found.append((doc, snippet, module, flags))
    return found


@functools.cache
def helps() -> dict[str, tuple[int, str]]:
    """``module -> (exit code, --helpfull output)``, each module run once, in parallel."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    modules = sorted({module for _, _, module, _ in commands()})
    procs = {
        m: subprocess.Popen(
            [sys.executable, "-m", m, "--helpfull"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for m in modules
    }
    return {m: (p.wait(timeout=120), p.stdout.read()) for m, p in procs.items()}


def test_the_docs_have_commands_to_check():
    modules = {module for _, _, module, _ in commands()}
    assert {"tlmed_keras.train", "tlmed_keras.predict", "experiments.sweep"} <= modules


@pytest.mark.parametrize("doc", UV_RUN_DOCS)
def test_commands_are_written_with_uv_run(doc):
    text = (REPO / doc).read_text()
    bare = [
        s
        for s in _snippets(text)
        if re.search(r"\b(python -m [\w.]+|tensorboard |saved_model_cli )", s)
        and not s.startswith("uv run ")
        and not re.search(r"python -m tlmed_keras\.[A-Z]\b", s)  # "any entry point X"
    ]
    assert not bare, f"{doc}: write these with `uv run` so they work as pasted: {bare}"


def test_every_module_exists_and_its_help_lists_the_flags_used():
    problems = []
    for doc, snippet, module, flags in commands():
        if importlib.util.find_spec(module) is None:
            problems.append(f"{doc}: no module {module} in `{snippet}`")
            continue
        code, text = helps()[module]
        # cli.run makes --help/--helpfull exit with 0 (absl's own app.run exits with 1).
        if code != 0 or not text.strip():
            problems.append(f"{module} --helpfull failed (exit {code}): {text[-300:]}")
            continue
        for flag in flags:
            name = flag[2:] if flag.startswith("no") and f"--[no]{flag[2:]}" in text else flag
            if not re.search(rf"--(\[no\])?{re.escape(name)}\b", text):
                problems.append(f"{doc}: {module} has no flag --{flag} (`{snippet}`)")
        for path in re.findall(r"--flagfile=(\S+)", snippet):
            if not (REPO / path.strip("'\"")).is_file():
                problems.append(f"{doc}: flagfile {path} does not exist")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("script", CONSOLE_SCRIPTS)
def test_console_scripts_the_docs_use_are_installed(script):
    used = any(f"uv run {script}" in (REPO / doc).read_text() for doc in UV_RUN_DOCS)
    assert used, f"the docs no longer use {script}: drop it from CONSOLE_SCRIPTS"
    assert (pathlib.Path(sys.executable).parent / script).is_file()


def test_readme_pipeline_numbers_are_the_committed_outputs():
    """The README quotes experiments/numbers/pipeline.txt (scripts/readme_numbers.sh): after a
    rerun, this fails until the README carries the new numbers and date."""
    output = (REPO / "experiments" / "numbers" / "pipeline.txt").read_text()
    speed = (REPO / "README.md").read_text().split("## Speed", 1)[1].split("\n## ", 1)[0]
    date = re.search(r"^# date: (\d{4}-\d\d-\d\d)", output, re.M).group(1)
    assert date in speed
    rates = re.findall(r"^pipeline_images_per_s=([\d.]+)", output, re.M)
    per_cpu = re.findall(r"images_per_cpu_s=([\d.]+)", output)
    assert len(rates) == len(per_cpu) == 3
    for value in (*rates, *per_cpu):
        assert f"{round(float(value)):,}" in speed, f"{value} of pipeline.txt not in the README"
