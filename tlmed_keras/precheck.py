"""Name checks that run before TensorFlow or Keras load (importing them takes 10-20 s).

``check_names`` judges ``--data`` against the MedMNIST catalog (pure Python) and ``--model``
against ``MODEL_NAMES``, a copy of the registry's names kept here because the registry
itself imports Keras. ``tests/test_cli.py`` checks the copy against
``tlmed_keras.models.model_names()``: a model added to the registry must be added here.
"""

from __future__ import annotations

# Every name of tlmed_keras.models.model_names().
MODEL_NAMES = (
    "vgg16",
    "vgg19",
    "resnet50",
    "resnet101",
    "resnet152",
    "inception_v3",
    "densenet121",
    "mobilenet_v2",
    "resnet18",
    "resnet34",
    "vit_b16",
    "dinov2_small",
    "mobilenet_v2_torchvision",
    "alexnet",
    "squeezenet1_1",
    "beit_base_patch16_224",
)


def check_data(name: str) -> None:
    """Raises ValueError naming the accepted datasets when ``name`` is not one."""
    from tlmed_keras.data import catalog

    if name not in catalog.dataset_names():
        raise ValueError(f"Bad --data={name!r}: accepted: {', '.join(catalog.dataset_names())}.")


def check_model(name: str) -> None:
    """Raises ValueError naming the registered models when ``name`` is not one."""
    if name not in MODEL_NAMES:
        raise ValueError(
            f"Bad --model={name!r}: accepted: {', '.join(MODEL_NAMES)} "
            "(python -m tlmed_keras.models --list describes them)."
        )
