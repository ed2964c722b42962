"""AlexNet: build, blocks, serialization, and parity with torchvision's layout.

torchvision is not installed (nor wanted): the reference below is torchvision's AlexNet
module for module, so ``state_dict()`` keys are torchvision's.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tlmed_keras.models import alexnet
from tlmed_keras.models.converters.state_dict import StateDictMismatchError

SMALL = 63  # alexnet.MIN_INPUT_SIZE: keeps the CPU tests quick


def _torch_alexnet(num_classes: int = 1000):
    """torchvision.models.AlexNet, written out (same modules, same state_dict keys)."""
    torch = pytest.importorskip("torch", reason="AlexNet parity needs PyTorch")
    nn = torch.nn

    class AlexNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(64, 192, kernel_size=5, padding=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(192, 384, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
            )
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(p=0.5),
                nn.Linear(256 * 6 * 6, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(p=0.5),
                nn.Linear(4096, 4096),
                nn.ReLU(inplace=True),
                nn.Linear(4096, num_classes),
            )

        def forward(self, x):
            x = self.avgpool(self.features(x))
            return self.classifier(torch.flatten(x, 1))

    torch.manual_seed(0)
    return AlexNet().eval()


# AlexNet carries 57-61 M parameters even at 63 px: build each variant once per module.
@pytest.fixture(scope="module")
def backbone() -> keras.Model:
    return alexnet.build_backbone((SMALL, SMALL, 3))


@pytest.fixture(scope="module")
def classifier() -> keras.Model:
    return alexnet.build_backbone((SMALL, SMALL, 3), include_top=True)


def test_backbone_outputs_4096_features(backbone, torch_ref):
    features = backbone(torch_ref.images(SMALL))
    assert features.shape == (2, alexnet.FEATURE_DIM)
    assert np.all(np.asarray(features) >= 0)  # after the second FC layer's ReLU


@pytest.mark.parametrize("variant", ["backbone", "classifier"])
def test_blocks_cover_every_trainable_weight(variant, request):
    model = request.getfixturevalue(variant)
    in_blocks = {id(w) for block in alexnet.blocks(model) for layer in block for w in layer.weights}
    assert in_blocks == {id(w) for w in model.trainable_weights}
    last = "classifier_6" if variant == "classifier" else "classifier_4"
    assert len(alexnet.blocks(model)) == alexnet.SPEC.num_blocks + (variant == "classifier")
    assert alexnet.blocks(model)[-1][0].name == last


def test_rejects_too_small_or_grey_input():
    with pytest.raises(ValueError, match="at least 63"):
        alexnet.build_backbone((62, 62, 3))
    with pytest.raises(ValueError, match="RGB"):
        alexnet.build_backbone((64, 64, 1))


@pytest.mark.parametrize(
    ("in_shape", "out"), [((5, 5), 3), ((7, 13), 6), ((3, 2), 6), ((6, 6), 6), ((1, 1), 6)]
)
def test_adaptive_pool_matches_torch(in_shape, out):
    torch = pytest.importorskip("torch", reason="adaptive pooling parity needs PyTorch")
    x = np.random.default_rng(1).normal(size=(2, *in_shape, 4)).astype("float32")
    ours = alexnet.AdaptiveAveragePooling2D(out)(x)
    reference = torch.nn.functional.adaptive_avg_pool2d(
        torch.from_numpy(x).permute(0, 3, 1, 2), out
    )
    np.testing.assert_allclose(ours, reference.permute(0, 2, 3, 1).numpy(), rtol=1e-6, atol=1e-6)


def test_custom_layer_round_trips_through_keras_file(tmp_path):
    inputs = keras.Input((7, 9, 2))
    model = keras.Model(inputs, alexnet.AdaptiveAveragePooling2D(6)(inputs))
    model.save(tmp_path / "pool.keras")
    loaded = keras.saving.load_model(tmp_path / "pool.keras", safe_mode=True)
    x = np.random.default_rng(2).normal(size=(1, 7, 9, 2)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)


def test_full_model_config_round_trips(classifier, torch_ref):
    clone = keras.Model.from_config(classifier.get_config())
    clone.set_weights(classifier.get_weights())
    x = torch_ref.images(SMALL, batch=1)
    np.testing.assert_allclose(clone(x), classifier(x), rtol=1e-5, atol=1e-6)


@pytest.mark.torch
def test_logits_match_torchvision_layout(torch_ref):
    # At 100 px the last feature map is 2x2: distinct 6x6 bins, so a wrong flatten order
    # (torch's [C, H, W] vs Keras' [H, W, C]) cannot hide.
    model, images, expected = torch_ref.ported(
        _torch_alexnet(), alexnet.build_backbone, alexnet.load_torch_state_dict, size=100
    )
    # float32 on both sides; the 9216-long dot products differ in summation order only.
    np.testing.assert_allclose(model(images), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.torch
def test_backbone_loads_pth_file_through_safe_reader(tmp_path, torch_ref):
    reference = _torch_alexnet()
    pth = tmp_path / "alexnet.pth"
    model, images = torch_ref.from_pth(reference, alexnet.build_backbone, pth, SMALL)

    def features(x):  # up to the second FC's ReLU: the backbone's 4096 features
        return reference.classifier[:6](reference.avgpool(reference.features(x)).flatten(1))

    np.testing.assert_allclose(
        model(images), torch_ref.logits(features, images), rtol=1e-4, atol=1e-4
    )


def _fake_state_dict(classifier: keras.Model) -> dict[str, np.ndarray]:
    """torchvision names and shapes, zeros: enough to exercise the key/shape checks."""
    shapes = {}
    for block in alexnet.blocks(classifier):
        layer = block[0]
        torch_name = layer.name.replace("_", ".")
        kernel = layer.kernel.shape
        shapes[f"{torch_name}.weight"] = (
            (kernel[3], kernel[2], kernel[0], kernel[1]) if len(kernel) == 4 else kernel[::-1]
        )
        shapes[f"{torch_name}.bias"] = layer.bias.shape
    return {key: np.zeros(shape, "float32") for key, shape in shapes.items()}


def test_backbone_ignores_imagenet_top_and_checks_keys(backbone, classifier):
    state = _fake_state_dict(classifier)
    model = backbone
    alexnet.load_torch_state_dict(model, state)  # classifier.6 is skipped without a top

    missing = {k: v for k, v in state.items() if k != "features.8.bias"}
    with pytest.raises(StateDictMismatchError, match=r"missing key 'features\.8\.bias'"):
        alexnet.load_torch_state_dict(model, missing)

    extra = {**state, "features.13.weight": np.zeros(3, "float32")}
    with pytest.raises(StateDictMismatchError, match=r"unexpected key 'features\.13\.weight'"):
        alexnet.load_torch_state_dict(model, extra)


def test_other_class_count_reports_shape_mismatch(classifier):
    state = _fake_state_dict(classifier)
    state["classifier.6.weight"] = np.zeros((10, 4096), "float32")  # a 10-class checkpoint
    with pytest.raises(StateDictMismatchError, match=r"shape mismatch for 'classifier\.6\.weight'"):
        alexnet.load_torch_state_dict(classifier, state)


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize("size", [alexnet.INPUT_SIZE, 227])
def test_logits_match_torchvision_layout_at_full_size(size, torch_ref):
    model, images, expected = torch_ref.ported(
        _torch_alexnet(), alexnet.build_backbone, alexnet.load_torch_state_dict, size, batch=1
    )
    np.testing.assert_allclose(model(images), expected, rtol=1e-4, atol=1e-4)
