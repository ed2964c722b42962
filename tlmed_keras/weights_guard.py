"""One error for every way a local ``--weights`` file can fail to load.

The converters and Keras raise many classes (ValueError for shape mismatches, OSError for
unreadable files, pickle's UnpicklingError for unsafe pickles, safetensors' SafetensorError
for a bad header, KeyError for missing tensors). ``loading_weights`` wraps them, at the
loading call site, into one ``WeightsFileError`` that names the file, the model, the reason
and what to do; the original stays as ``__cause__`` (``TLMED_TRACEBACK=1`` prints it).
Classes are matched by family and by name, so renaming them in the model zoo keeps working.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import warnings
import zipfile
from collections.abc import Iterator

from tlmed_keras.errors import WeightsFileError

WEIGHTS_KEYWORDS = ("imagenet", "none")
LOAD_ERROR_NAMES = frozenset(
    {
        "UnsafeCheckpointError",
        "CheckpointFormatError",
        "WeightMismatchError",
        "StateDictMismatchError",
        "SafetensorError",
        "BadZipFile",
    }
)
NOT_LOAD_ERRORS = frozenset({"WeightsUnavailableError"})  # offline imagenet: its own message


def is_weights_file(weights: object) -> bool:
    """Whether ``weights`` names a local file rather than 'imagenet'/'none'/None."""
    if weights is None:
        return False
    return not (isinstance(weights, str) and weights.lower() in WEIGHTS_KEYWORDS)


def _is_load_failure(error: BaseException) -> bool:
    names = {cls.__name__ for cls in type(error).__mro__}
    if names & NOT_LOAD_ERRORS:
        return False
    families = (ValueError, OSError, EOFError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile)
    return isinstance(error, families) or bool(names & LOAD_ERROR_NAMES)


def _keras_file_has_lambda(path: str) -> bool:
    """Whether a ``.keras`` zip's config names a Lambda layer (read as text, never run)."""
    if not path.endswith(".keras"):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            config = archive.read("config.json").decode(errors="replace")
    except (OSError, KeyError, zipfile.BadZipFile):
        return False
    return '"class_name": "Lambda"' in config


def _reason(error: BaseException) -> str:
    # Keras appends the repr of every layer it could not fill: hundreds of "<Conv2D ...>".
    text = str(error).split("List of objects that could not be loaded")[0]
    text = " ".join(text.split())
    if isinstance(error, KeyError):
        text = f"missing tensor {text}"
    return (text[:400] + " ...") if len(text) > 400 else text or type(error).__name__


def describe(weights: object, model: str, error: BaseException) -> str:
    """One line: which file was refused for which model, why, and what to do."""
    path = os.fspath(weights)
    names = {cls.__name__ for cls in type(error).__mro__}
    text = str(error)
    if "Lambda" in text or "safe_mode" in text or _keras_file_has_lambda(path):
        return (
            f"Refused --weights={path} for {model}: the file holds a Lambda layer (Python code), "
            "which Keras' safe mode never loads from a file since it could run anything, and "
            f"its weights do not fit {model} without it. Save the backbone's weights alone "
            "where the model is defined (model.save_weights('x.weights.h5')) and pass that file."
        )
    if "UnsafeCheckpointError" in names:
        return (
            f"Refused --weights={path} for {model}: the pickle would run code when loaded (it "
            f"was not run): {_reason(error)} Use a plain state_dict (torch.save(model."
            "state_dict(), ...)) or a .safetensors file from a source you trust."
        )
    return (
        f"Could not load --weights={path} into {model} ({type(error).__name__}: "
        f"{_reason(error)}). Pass a weights file of {model}'s architecture (python -m "
        "tlmed_keras.models --list names the formats), or --weights=imagenet / none."
    )


@contextlib.contextmanager
def loading_weights(weights: object, model: str) -> Iterator[None]:
    """Turns a failure to load the local weights file ``weights`` into WeightsFileError.

    Does nothing for 'imagenet'/'none' (their errors, e.g. offline, have their own class).
    """
    if not is_weights_file(weights):
        yield
        return
    # Keras warns once per layer it could not fill (hundreds of lines) before it raises:
    # held back, and shown only when the load succeeds; on failure the error says it all.
    with warnings.catch_warnings(record=True) as held:
        try:
            yield
        except WeightsFileError:
            raise
        except Exception as error:
            if not _is_load_failure(error):
                raise
            raise WeightsFileError(describe(weights, model, error)) from error
    for w in held:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
