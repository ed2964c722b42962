"""The project's expected errors: a bad input or a damaged file, never a bug.

``tlmed_keras.cli`` prints these as one ``prog: error: ...`` line. Each class also derives
from the built-in exception a caller would expect (ValueError, OSError, ...), so generic
handlers written before this module keep working. The module imports nothing, so entry
points can use it before TensorFlow or Keras load.
"""

from __future__ import annotations

EXIT_FAILURE = 1  # the input was fine but a file, the disk or a run directory failed us
EXIT_USAGE = 2  # a bad flag or flag value: fix the command line


class TlmedError(Exception):
    """An expected failure with a message that says what to do. ``exit_code`` is the
    process exit status the command-line layer uses."""

    exit_code = EXIT_FAILURE


class WeightsFileError(TlmedError, ValueError):
    """A ``--weights`` file could not be read, trusted or fitted to the model. Raised at the
    loading call site from whatever the converter or Keras raised (kept as ``__cause__``)."""


class RunDirError(TlmedError, OSError):
    """A run directory (``--workdir``) cannot be used as asked."""


class RunLockedError(RunDirError):
    """Another live process is training in the run directory."""


class CheckpointError(RunDirError):
    """No intact checkpoint to resume from, or a damaged resume state file."""


class TrainingDivergedError(TlmedError, FloatingPointError):
    """The training loss grew far above its starting value (see ``--divergence_factor``)."""
