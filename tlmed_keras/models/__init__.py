"""Model zoo: ImageNet backbones ready for fine-tuning on MedMNIST.

One file per backbone family (``keras_apps``, ``kerashub``, ``mobilenet_v2_torchvision``,
``alexnet``, ``squeezenet``, ``beit``, ``efficientnet``): each declares complete ``ModelSpec``s
and registers them where it builds them (``spec.register``); ``registry`` collects them.
``features`` says where each backbone's last spatial features are (its ``ModelSpec.features``).

The public API lives in ``registry`` and is re-exported lazily here, so that
``python -m tlmed_keras.models`` can parse its flags and pick the Keras backend before
anything imports Keras.
"""

from __future__ import annotations

import importlib
from typing import Any

REGISTRY_API = (
    "ModelSpec",
    "WeightsUnavailableError",
    "blocks",
    "build_backbone",
    "build_classifier",
    "build_imagenet_classifier",
    "feature_split",
    "get_spec",
    "model_names",
    "normalization_of",
    "register_layers",
    "route_layers",
    "set_trainable",
)

__all__ = list(REGISTRY_API)


def __getattr__(name: str) -> Any:
    if name in REGISTRY_API:
        return getattr(importlib.import_module(".registry", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
