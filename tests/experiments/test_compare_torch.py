"""compare_torch.py's PyTorch peer: torchvision's import work-around and config checks."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

SCRIPT = pathlib.Path(__file__).parents[2] / "experiments" / "cpu_speed" / "compare_torch.py"


@pytest.fixture
def compare_torch():
    spec = importlib.util.spec_from_file_location("compare_torch_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_torchvision(root: pathlib.Path, meta_error: str) -> None:
    """A torchvision whose _meta_registrations fails like the CUDA wheel beside CPU torch."""
    pkg = root / "torchvision"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from torchvision import _meta_registrations\n__version__ = 'fake'\nmodels = 'models'\n"
    )
    (pkg / "_meta_registrations.py").write_text(f"raise RuntimeError({meta_error!r})\n")


@pytest.fixture
def clean_torchvision(monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
        monkeypatch.delitem(sys.modules, name)
    yield
    for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
        del sys.modules[name]


def test_missing_operator_registrations_are_stubbed(
    compare_torch, tmp_path, monkeypatch, clean_torchvision
):
    _fake_torchvision(tmp_path, "operator torchvision::nms does not exist")
    monkeypatch.syspath_prepend(str(tmp_path))
    tv = compare_torch.import_torchvision()
    assert tv.__version__ == "fake"
    assert tv.models == "models"


def test_other_import_errors_are_not_hidden(
    compare_torch, tmp_path, monkeypatch, clean_torchvision
):
    _fake_torchvision(tmp_path, "something else broke")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match="something else broke"):
        compare_torch.import_torchvision()


def test_bad_peer_options_are_named(compare_torch):
    with pytest.raises(ValueError, match="impl='timm'"):
        compare_torch.build_torch_model("mobilenetv2", "timm")
    with pytest.raises(ValueError, match="no 'vgg16'"):
        compare_torch.build_torch_model("vgg16", "tv")


def test_torch_configs_use_the_peer_interpreter(compare_torch, monkeypatch):
    seen = []

    def fake_run(cmd, **kwargs):
        seen.append(cmd[0])
        raise compare_torch.subprocess.TimeoutExpired(cmd, 1)

    monkeypatch.setattr(compare_torch.subprocess, "run", fake_run)
    compare_torch.run_one("torch:amp=bf16", "resnet50", 1, 1, 1, torch_python="/peer/python")
    compare_torch.run_one("keras-tf", "resnet50", 1, 1, 1, torch_python="/peer/python")
    assert seen == ["/peer/python", sys.executable]
