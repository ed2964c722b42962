"""The members of the recipe: a TOML file of training flagfiles x seeds, and the plan of runs.

    seeds = [0, 1, 2]
    [members]
    mobilenet_v2_torchvision = "mobilenet_v2_torchvision.cfg"   # flagfile beside this file

Each (member, seed) is one ordinary training run in ``WORKDIR/<member>/seed<k>``. Its
``Config`` is built here exactly as ``python -m tlmed_keras.train`` builds it from the same
flags (``member_config``), so a finished run can be recognised without starting TensorFlow.
No Keras here.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path

from tlmed_keras.runs.config import Config, fields_help

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MEMBERS = REPO / "flags" / "recipes" / "best.toml"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RecipeError(ValueError):
    """A members file or a plan that cannot run: the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class Member:
    """One backbone recipe: a name (its folder under WORKDIR) and its training flagfile."""

    name: str
    flagfile: Path


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What the members file says: the members and the seeds each of them runs."""

    members: tuple[Member, ...]
    seeds: tuple[int, ...]
    source: Path


@dataclasses.dataclass(frozen=True)
class MemberRun:
    """One training run of the plan."""

    member: Member
    seed: int
    workdir: Path

    @property
    def label(self) -> str:
        return f"{self.member.name}/seed{self.seed}"


def load_recipe(path: str | Path = DEFAULT_MEMBERS, seeds: Sequence[int] | None = None) -> Recipe:
    """Reads a members file (see the module docstring); ``seeds`` replaces the file's.

    Raises:
        RecipeError: an unreadable file, no members, a bad name or seed, a missing flagfile.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise RecipeError(f"Cannot read the members file {path}: {e}.") from e
    table = data.get("members")
    if not isinstance(table, dict) or not table:
        raise RecipeError(
            f'{path} lists no members: add a [members] table of name = "flagfile.cfg" lines.'
        )
    members = tuple(_member(name, value, path) for name, value in table.items())
    chosen = tuple(data.get("seeds", [0]) if seeds is None else seeds)
    if not chosen or not all(isinstance(s, int) and s >= 0 for s in chosen):
        raise RecipeError(
            f"Bad seeds {list(chosen)!r} in {path}: give integers >= 0, e.g. [0, 1, 2]."
        )
    return Recipe(members, tuple(dict.fromkeys(chosen)), path)


def _member(name: str, value: object, source: Path) -> Member:
    if not NAME_PATTERN.match(name):
        raise RecipeError(
            f"Bad member name {name!r} in {source}: use letters, digits, '_', '-', '.' (it "
            "becomes a folder name)."
        )
    if not isinstance(value, str):
        raise RecipeError(f"Member {name!r} in {source} must name a flagfile, got {value!r}.")
    flagfile = (source.parent / value).resolve()
    if not flagfile.is_file():
        raise RecipeError(
            f"Member {name!r} of {source}: its flagfile {flagfile} does not exist. Fix the "
            "path (relative to the members file)."
        )
    return Member(name, flagfile)


def plan(recipe: Recipe, workdir: str | Path) -> list[MemberRun]:
    """Every (member, seed) run in order: member by member, seeds ascending as given."""
    root = Path(workdir)
    return [
        MemberRun(member, seed, root / member.name / f"seed{seed}")
        for member in recipe.members
        for seed in recipe.seeds
    ]


def train_arguments(run: MemberRun, extra: dict[str, str]) -> list[str]:
    """The flags of ``python -m tlmed_keras.train`` for ``run``: its flagfile, seed, workdir,
    then ``extra`` (``--name=value``; data, data_dir, weights_dir, ...) last, so they win."""
    args = [f"--flagfile={run.member.flagfile}", f"--seed={run.seed}", f"--workdir={run.workdir}"]
    return args + [f"--{name}={value}" for name, value in extra.items()]


def member_config(arguments: Sequence[str]) -> Config:
    """The ``Config`` ``python -m tlmed_keras.train ARGUMENTS`` builds (the same flag
    definitions, in a private flag registry; ``--workdir`` and ``--verbose`` are not
    Config fields and are ignored here).

    Raises:
        RecipeError: a flag the trainer does not know, or a bad value.
    """
    from absl import flags

    values = flags.FlagValues()
    define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}
    for name, default, help_ in fields_help():
        define.get(type(default), flags.DEFINE_string)(name, default, help_, flag_values=values)
    for name in ("workdir", "verbose"):  # train's flags that are not Config fields
        flags.DEFINE_string(name, "", "", flag_values=values)
    try:
        values(["train", *arguments])
    except flags.Error as e:
        raise RecipeError(f"A member's training flags do not parse: {e}") from e
    return Config(**{name: values[name].value for name, _, _ in fields_help()})
