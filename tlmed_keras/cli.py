"""The one place where every ``python -m tlmed_keras.*`` entry point turns expected errors
into a single ``prog: error: <message>`` line.

Use it instead of absl's ``app.run``::

    from tlmed_keras import cli

    def main(argv): ...

    if __name__ == "__main__":
        cli.run(main)

What counts as expected (``is_expected``): the project's errors (``tlmed_keras.errors``, the
data layer's ``MedMNISTFileError``, and by class name the model zoo's weight and checkpoint
errors), bad flags (absl's flag errors, ``UsageError``) and bad values (``ValueError``), and
the environment (``OSError``: missing or unreadable files, a full disk; ``pickle`` and zip
errors of damaged files). They exit with 2 (a bad flag or value: fix the command) or 1 (a
file, the disk or a run failed). Anything else (TypeError, KeyError, AttributeError, ...) is
a bug and keeps its traceback. ``TLMED_TRACEBACK=1`` shows the traceback of expected errors
too, for bug reports. ``--help`` (and ``--helpshort``/``--helpfull``) exit with 0; Ctrl-C
prints one line and exits with 130; a closed pipe (``| head``) ends quietly.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from tlmed_keras.errors import EXIT_FAILURE, EXIT_USAGE, TlmedError

# Expected errors known by class name, so that this module imports neither Keras nor the
# model zoo (whose classes may be renamed or merged: any name in the MRO matches).
EXPECTED_NAMES = frozenset(
    {
        "MedMNISTFileError",  # data layer
        "WeightsUnavailableError",  # models: offline and not cached
        "UnsafeCheckpointError",  # models: a pickle that would run code (never run)
        "CheckpointFormatError",
        "WeightMismatchError",
        "StateDictMismatchError",
        "SafetensorError",  # safetensors: not a safetensors file
        "ExportVerificationError",  # serving: SavedModel disagrees with Keras
        "UnpicklingError",
        "BadZipFile",
        "Error",  # absl.flags.Error (flag parsing and validators); checked with its module
        "UsageError",  # absl.app.UsageError
    }
)
USAGE_NAMES = frozenset({"Error", "UsageError", "IllegalFlagValueError", "ValidationError"})
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
HELP_FLAGS = frozenset({"help", "h", "?", "helpshort", "helpfull", "helpxml"})
TRACEBACK_ENV = "TLMED_TRACEBACK"
Options = TypeVar("Options")

# What to do about common OSErrors, by errno.
_OS_HINTS = {
    errno.EACCES: "check its permissions (ls -l) or use a path you can read and write",
    errno.EPERM: "check its permissions (ls -l) or use a path you can read and write",
    errno.ENOSPC: "free disk space and rerun the same command (an interrupted run resumes)",
    errno.EISDIR: "a folder stands where a file is expected: move it away or pick another path",
    errno.EEXIST: "a folder or file is in the way: move it away or pick another path",
    errno.ENOTDIR: "a file stands where a folder is expected: move it away or pick another path",
    errno.EROFS: "the file system is read-only: pick a writable path",
}


def _mro_names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


def _is_absl_error(error: BaseException) -> bool:
    return any(cls.__module__.startswith("absl") for cls in type(error).__mro__[:-2])


def is_expected(error: BaseException) -> bool:
    """Whether ``error`` is the user's input or environment rather than a bug."""
    if isinstance(error, TlmedError | ValueError | OSError | FloatingPointError | EOFError):
        return True
    names = _mro_names(error)
    if names & {"Error", "UsageError"}:
        return _is_absl_error(error)
    return bool(names & EXPECTED_NAMES)


def exit_code(error: BaseException) -> int:
    """2 for a bad flag or value (fix the command), 1 for everything else expected."""
    if isinstance(error, TlmedError):
        return error.exit_code
    if _is_absl_error(error) and _mro_names(error) & USAGE_NAMES:
        return EXIT_USAGE
    if "MedMNISTFileError" in _mro_names(error):
        return EXIT_FAILURE
    if isinstance(error, ValueError) and not _mro_names(error) & EXPECTED_NAMES:
        return EXIT_USAGE
    return EXIT_FAILURE


def message(error: BaseException) -> str:
    """The error as one line; an OSError with a file name says which file and what to do."""
    if (
        isinstance(error, OSError)
        and not isinstance(error, TlmedError)
        and error.filename
        and error.strerror
    ):
        text = f"{error.filename}: {error.strerror}"
        hint = _OS_HINTS.get(error.errno)
        return f"{text}; {hint}." if hint else f"{text}."
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and error.strerror and not error.filename:
        hint = _OS_HINTS.get(error.errno)
        text = f"{text}; {hint}." if hint else text
    return text


def prog_name(main: Callable[..., Any] | None = None) -> str:
    """``tlmed_keras.train`` for ``python -m tlmed_keras.train`` (package ``__main__``
    modules are named after their package)."""
    module = getattr(main, "__module__", None)
    if module in (None, "__main__"):
        spec = getattr(main, "__globals__", {}).get("__spec__")  # set by python -m and runpy
        module = spec.name if spec is not None else os.path.basename(sys.argv[0])
    return module.removesuffix(".__main__")


def fail(prog: str, error: BaseException) -> int:
    """Prints ``prog: error: message`` on stderr and returns the exit code."""
    if os.environ.get(TRACEBACK_ENV):
        import traceback

        traceback.print_exception(error, file=sys.stderr)
    print(f"{prog}: error: {message(error)}", file=sys.stderr, flush=True)
    return exit_code(error)


def guard(main: Callable[[list[str]], Any], prog: str | None = None) -> Callable:
    """``main`` with expected errors turned into one line and an exit code (a decorator too)."""
    name = prog or prog_name(main)

    def guarded(argv: list[str]) -> Any:
        try:
            return main(argv)
        except BrokenPipeError:
            # The reader went away (``... | head``): nothing to report, as other CLI tools.
            # Python docs' recipe: point stdout at devnull so the exit flush stays quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_FAILURE)
        except KeyboardInterrupt:
            print(
                f"{name}: interrupted (Ctrl-C). A training run resumes when the same command "
                "is run again.",
                file=sys.stderr,
            )
            sys.exit(EXIT_INTERRUPTED)
        except Exception as error:
            if not is_expected(error):
                raise
            sys.exit(fail(name, error))

    guarded.__wrapped__ = main
    return guarded


def _asked_for_help(argv: list[str]) -> bool:
    return any(a.startswith("-") and a.lstrip("-").split("=")[0] in HELP_FLAGS for a in argv)


def parse_flags(prog: str) -> Callable[[list[str]], list[str]]:
    """absl's flag parsing with bad flags as one line (exit 2) and help exiting with 0."""
    from absl import flags

    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            sys.exit(fail(prog, error))
        except SystemExit as done:
            # absl's --help prints the usage, then exits with 1; asking for help succeeded.
            if done.code == 1 and _asked_for_help(argv[1:]):
                sys.exit(0)
            raise

    return parse


def run(main: Callable[[list[str]], Any], prog: str | None = None, argv=None) -> None:
    """``absl.app.run(main)`` with the project's error handling (see the module docstring)."""
    from absl import app

    name = prog or prog_name(main)
    app.run(guard(main, name), argv=argv, flags_parser=parse_flags(name))


def flag_values(*names: str) -> dict[str, Any]:
    """``{name: value}`` of the parsed flags ``names``, for a function whose keywords are named
    after them (the flag and the keyword then cannot drift apart)."""
    from absl import flags

    return {name: flags.FLAGS[name].value for name in names}


def options_from_flags(options_type: type[Options], **given: Any) -> Options:
    """``options_type`` (a dataclass whose fields are named after flags) from the parsed flags.

    Each field takes the value of the flag of its name; ``given`` values win (a flag that
    needs converting first); a field with neither keeps its default.
    """
    from absl import flags

    names = [f.name for f in dataclasses.fields(options_type) if f.name in flags.FLAGS]
    return options_type(**{**flag_values(*names), **given})
