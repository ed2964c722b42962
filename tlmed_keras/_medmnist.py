"""The one door to the `medmnist` package.

medmnist's ``__init__`` imports its PyTorch Dataset classes inside a bare ``try`` and prints
"Please install the required packages first" when torch is absent. We never install torch
(we only want its catalog and metric functions), so every import goes through here, where
that message is swallowed before it can reach a user.
"""

from __future__ import annotations

import contextlib
import io
from types import ModuleType


def _quiet_import(module: str) -> ModuleType:
    import importlib

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return importlib.import_module(module)


def info_module() -> ModuleType:
    """Returns ``medmnist.info`` (INFO, DEFAULT_ROOT, __version__)."""
    return _quiet_import("medmnist.info")


def evaluator_module() -> ModuleType:
    """Returns ``medmnist.evaluator`` (the official ``getACC`` / ``getAUC``)."""
    return _quiet_import("medmnist.evaluator")
