"""The one door to the `medmnist` package.

medmnist's package ``__init__`` imports its PyTorch Dataset classes inside a bare ``try`` and
prints "Please install the required packages first" when torch is absent; when torch *is*
present (a developer's parity-test venv) it imports torch, costing ~10 s per start-up. We only
want its catalog (``medmnist/info.py``, a plain dict with no imports of its own), so we load
that file on its own, skipping the package ``__init__`` entirely. The metric module needs the
package; it is imported with the message swallowed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import io
import pathlib
from types import ModuleType


@functools.cache
def info_module() -> ModuleType:
    """Returns medmnist's ``info`` module (INFO, DEFAULT_ROOT, __version__), loaded alone."""
    package = importlib.util.find_spec("medmnist")
    if package is None or not package.submodule_search_locations:
        raise RuntimeError(
            "The medmnist package is not installed. Fix: uv sync (or pip install medmnist)."
        )
    path = pathlib.Path(next(iter(package.submodule_search_locations))) / "info.py"
    spec = importlib.util.spec_from_file_location("tlmed_keras._medmnist_info", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluator_module() -> ModuleType:
    """Returns ``medmnist.evaluator`` (the official ``getACC`` / ``getAUC``), imported quietly."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return importlib.import_module("medmnist.evaluator")
