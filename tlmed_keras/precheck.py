"""Name checks that run before TensorFlow or Keras load (importing them takes 10-20 s).

``check_data`` judges ``--data`` against the MedMNIST catalog (pure Python); ``check_model``
judges ``--model`` against ``model_names()``, read from the source of the model zoo's family
modules (the ``name="..."`` of each ``ModelSpec``/``register_*`` call) without importing them,
because they import Keras. A new backbone file is found here as by the registry itself;
``tests/test_cli.py`` checks both give the same names.
"""

from __future__ import annotations

import ast
import functools
import pathlib

_MODELS = pathlib.Path(__file__).parent / "models"
# Modules of models/ that declare no backbone (the registry collects from all the others).
_NOT_FAMILIES = {"__init__", "__main__", "registry", "spec"}
_DECLARING_CALLS = {"ModelSpec", "register_app", "register_hub"}


@functools.cache
def model_names() -> tuple[str, ...]:
    """Every backbone name the family modules in ``tlmed_keras/models`` declare."""
    names = []
    for path in sorted(_MODELS.glob("*.py")):
        if path.stem in _NOT_FAMILIES:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and _called_name(node) in _DECLARING_CALLS:
                names += [
                    kw.value.value
                    for kw in node.keywords
                    if kw.arg == "name" and isinstance(kw.value, ast.Constant)
                ]
    return tuple(names)


def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def check_data(name: str) -> None:
    """Raises ValueError naming the accepted datasets when ``name`` is not one."""
    from tlmed_keras.data import catalog

    if name not in catalog.dataset_names():
        raise ValueError(f"Bad --data={name!r}: accepted: {', '.join(catalog.dataset_names())}.")


def check_model(name: str) -> None:
    """Raises ValueError naming the registered models when ``name`` is not one."""
    if name not in model_names():
        raise ValueError(
            f"Bad --model={name!r}: accepted: {', '.join(sorted(model_names()))} "
            "(python -m tlmed_keras.models --list describes them)."
        )
