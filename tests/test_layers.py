"""The package's layers: no module imports from a package above it or beside it.

Data flows one way: the floor (modules every job stands on) -> data -> models -> runs,
serving and saliency (the formats every job reads: run directories, SavedModels; the maps of
a built model) -> the jobs (train, evaluate, export, predict, eda) -> bench and recipe (which
run the jobs) -> experiments. The imports are read from the
source (ast), lazy ones inside functions included, so nothing is imported to check them.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tlmed_keras"

# Each top-level module or package of tlmed_keras, by layer (lowest first). A unit may import
# from a lower layer only; floor modules may also import one another (they are small,
# job-free helpers: errors, flag parsing, backend set-up, MedMNIST metrics, TTA names).
LAYERS: tuple[frozenset[str], ...] = (
    frozenset(
        {"__init__", "_medmnist", "errors", "cli", "runtime", "metrics", "tta"}
        | {"housekeeping", "weights_guard", "calibration", "intervals", "weights_files"}
    ),
    frozenset({"data"}),
    # precheck judges --data against the catalog and --model against models/' source (read
    # as text, not imported), before Keras loads: it stands where the models do.
    frozenset({"models", "precheck"}),
    # saliency: class-activation maps of a built model, used by evaluate and predict alike.
    frozenset({"runs", "serving", "saliency"}),
    frozenset({"train", "evaluate", "export", "predict", "eda"}),
    # recipe runs train, evaluate and export for each member and their ensemble; bench times
    # the trainer: both stand above the jobs.
    frozenset({"bench", "recipe"}),
)
FLOOR = 0
EXPERIMENTS = "experiments"  # top of the house, outside the package: may import anything


def _layer_of(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise KeyError(unit)


def _unit_of(path: pathlib.Path, package: pathlib.Path) -> str:
    """The top-level module or package of ``package`` that ``path`` belongs to."""
    return path.relative_to(package).with_suffix("").parts[0]


def _imported_units(tree: ast.AST) -> list[tuple[int, str, str]]:
    """``(line, dotted module, unit)`` of each import of tlmed_keras in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "tlmed_keras":  # from tlmed_keras import metrics, runtime
                modules = [f"tlmed_keras.{alias.name}" for alias in node.names]
            else:
                modules = [node.module]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "tlmed_keras" and len(parts) > 1:
                found.append((node.lineno, module, parts[1]))
            elif parts[0] == EXPERIMENTS:
                found.append((node.lineno, module, EXPERIMENTS))
    return found


def _allowed(source: str, target: str) -> bool:
    if target == source:
        return True
    if target == EXPERIMENTS:
        return False
    low, high = _layer_of(target), _layer_of(source)
    return low < high or (low == high == FLOOR)


def layer_violations(package: pathlib.Path = PACKAGE) -> list[str]:
    """Every import of a unit above or beside the importing one, as ``path:line module``."""
    bad = []
    for path in sorted(package.rglob("*.py")):
        source = _unit_of(path, package)
        for line, module, target in _imported_units(ast.parse(path.read_text())):
            if not _allowed(source, target):
                bad.append(f"{path.relative_to(package.parent)}:{line} imports {module}")
    return bad


def test_every_unit_of_the_package_has_a_layer():
    units = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()
    }
    missing = sorted(u for u in units if not any(u in layer for layer in LAYERS))
    assert not missing, f"give these a layer in LAYERS: {missing}"


def test_no_import_from_a_package_above_or_beside():
    assert layer_violations() == []


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        ("train", "runs", True),  # below
        ("train", "evaluate", False),  # beside
        ("data", "models", False),  # above
        ("cli", "runtime", True),  # floor modules share the floor
        ("cli", "runs", False),  # the floor imports no job's package
        ("bench", "train", True),
        ("bench", EXPERIMENTS, False),
    ],
)
def test_the_rule_itself(source, target, allowed):
    assert _allowed(source, target) is allowed


def test_lazy_imports_inside_functions_are_read(tmp_path):
    package = tmp_path / "tlmed_keras"
    (package / "data").mkdir(parents=True)
    (package / "data" / "x.py").write_text(
        "def f():\n    from tlmed_keras.train import trainer\n    import tlmed_keras.models.spec\n"
    )
    assert layer_violations(package) == [
        "tlmed_keras/data/x.py:2 imports tlmed_keras.train",
        "tlmed_keras/data/x.py:3 imports tlmed_keras.models.spec",
    ]
