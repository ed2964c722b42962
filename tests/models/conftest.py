"""Fixtures of the model-zoo tests: shared weights and photos, torch-reference helpers."""

from __future__ import annotations

import pathlib
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[2]
TORCHVISION_MOBILENET = "weights/torchvision/mobilenet_v2-b0353104.pth"


@pytest.fixture(scope="session")
def mobilenet_pth(shared_dir) -> pathlib.Path:
    """Genuine torchvision MobileNetV2 ImageNet weights (legacy .pth) from ../shared."""
    return shared_dir / TORCHVISION_MOBILENET


@pytest.fixture(scope="session")
def imagenet_mobilenet(mobilenet_pth):
    """The converted torchvision MobileNetV2 with its ImageNet head (built once)."""
    from tlmed_keras import models

    return models.build_imagenet_classifier("mobilenet_v2_torchvision", weights=mobilenet_pth)


@pytest.fixture(scope="session")
def photo(shared_dir):
    """``photo("chelsea")`` -> uint8 ``[1, 224, 224, 3]`` from ../shared/data/photos."""

    def _load(name: str) -> np.ndarray:
        path = shared_dir / "data" / "photos" / f"{name}_224.png"
        return np.asarray(Image.open(path).convert("RGB"))[None]

    return _load


def _numpy_state_dict(module) -> dict[str, np.ndarray]:
    return {key: value.detach().numpy() for key, value in module.state_dict().items()}


def _random_images(size: int, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")


def _torch_logits(module, images: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        output = module(torch.from_numpy(images.transpose(0, 3, 1, 2)))
    # Hugging Face models return an output object; torchvision-style modules a tensor.
    return getattr(output, "logits", output).numpy()


def _ported(reference, build, load, size: int, batch: int = 2, **build_options):
    model = build((size, size, 3), include_top=True, **build_options)
    load(model, _numpy_state_dict(reference))
    images = _random_images(size, batch)
    return model, images, _torch_logits(reference, images)


def _from_pth(module, build, path: pathlib.Path, size: int):
    import torch

    torch.save(module.state_dict(), path)
    return build((size, size, 3), weights=path), _random_images(size)


@pytest.fixture(scope="session")
def torch_ref() -> SimpleNamespace:
    """Helpers to compare a Keras port with its torch reference module.

    ``state_dict(module)``: its parameters as NumPy arrays under torch's keys;
    ``images(size, batch=2)``: fixed random NHWC float32 images;
    ``logits(module, images)``: the output of the module (or of any function of an NCHW
    tensor) on them, as NumPy;
    ``ported(module, build, load, size, batch=2, **build_options) -> (model, images,
    expected)``: ``build((size, size, 3), include_top=True, ...)`` given the module's weights
    by ``load(model, state_dict)``, ``images(size, batch)`` and the module's logits on them;
    ``from_pth(module, build, path, size) -> (model, images)``: the module's state dict saved
    as a ``.pth`` file at ``path`` (as torchvision publishes them), ``build((size, size, 3),
    weights=path)`` reading it, and ``images(size)``.
    """
    return SimpleNamespace(
        state_dict=_numpy_state_dict,
        images=_random_images,
        logits=_torch_logits,
        ported=_ported,
        from_pth=_from_pth,
    )
