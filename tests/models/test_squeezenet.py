"""SqueezeNet 1.1: build, blocks, ceil-mode pooling, parity with torchvision's layout.

torchvision is not installed (nor wanted): the reference below is torchvision's SqueezeNet
1.1 module for module, so ``state_dict()`` keys are torchvision's.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tlmed_keras.models import squeezenet
from tlmed_keras.models.converters.state_dict import StateDictMismatchError

SMALL = 32


def _torch_squeezenet1_1(num_classes: int = 1000):
    """torchvision.models.squeezenet1_1, written out (same modules, same state_dict keys)."""
    torch = pytest.importorskip("torch", reason="SqueezeNet parity needs PyTorch")
    nn = torch.nn

    class Fire(nn.Module):
        def __init__(self, inplanes, squeeze_planes, expand1x1_planes, expand3x3_planes):
            super().__init__()
            self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1)
            self.squeeze_activation = nn.ReLU(inplace=True)
            self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
            self.expand1x1_activation = nn.ReLU(inplace=True)
            self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
            self.expand3x3_activation = nn.ReLU(inplace=True)

        def forward(self, x):
            x = self.squeeze_activation(self.squeeze(x))
            return torch.cat(
                [
                    self.expand1x1_activation(self.expand1x1(x)),
                    self.expand3x3_activation(self.expand3x3(x)),
                ],
                1,
            )

    class SqueezeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, kernel_size=3, stride=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                Fire(64, 16, 64, 64),
                Fire(128, 16, 64, 64),
                nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                Fire(128, 32, 128, 128),
                Fire(256, 32, 128, 128),
                nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                Fire(256, 48, 192, 192),
                Fire(384, 48, 192, 192),
                Fire(384, 64, 256, 256),
                Fire(512, 64, 256, 256),
            )
            final_conv = nn.Conv2d(512, num_classes, kernel_size=1)
            self.classifier = nn.Sequential(
                nn.Dropout(p=0.5), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
            )

        def forward(self, x):
            return torch.flatten(self.classifier(self.features(x)), 1)

    torch.manual_seed(0)
    model = SqueezeNet().eval()
    # Random init with every bias 0 leaves many class scores dead after the final ReLU;
    # small positive biases keep the comparison informative.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.uniform_(0.0, 0.1)
    return model


def test_backbone_outputs_pooled_512_features(torch_ref):
    model = squeezenet.build_backbone((SMALL, SMALL, 3))
    assert model(torch_ref.images(SMALL)).shape == (2, squeezenet.FEATURE_DIM)
    assert model.count_params() == 722_496  # torchvision's 1,235,496 minus the 512->1000 conv


def test_classifier_has_torchvision_parameter_count(torch_ref):
    model = squeezenet.build_backbone((SMALL, SMALL, 3), include_top=True)
    assert model.count_params() == 1_235_496
    assert model(torch_ref.images(SMALL)).shape == (2, 1000)


@pytest.mark.parametrize("include_top", [False, True])
def test_blocks_cover_every_trainable_weight(include_top):
    model = squeezenet.build_backbone((SMALL, SMALL, 3), include_top=include_top)
    groups = squeezenet.blocks(model)
    assert len(groups) == squeezenet.SPEC.num_blocks + include_top  # stem, 8 Fire modules, top
    in_blocks = {id(w) for block in groups for layer in block for w in layer.weights}
    assert in_blocks == {id(w) for w in model.trainable_weights}


@pytest.mark.parametrize(("size", "expected"), [(55, 27), (54, 27), (13, 6), (12, 6), (3, 1)])
def test_ceil_mode_output_sizes(size, expected):
    extra = squeezenet.ceil_mode_extra(size)
    assert (size + extra - 3) // 2 + 1 == expected  # torch: ceil((size - 3) / 2) + 1


def test_rejects_too_small_or_grey_input():
    with pytest.raises(ValueError, match="at least 25"):
        squeezenet.build_backbone((24, 24, 3))
    with pytest.raises(ValueError, match="RGB"):
        squeezenet.build_backbone((32, 32, 1))


def test_model_round_trips_through_keras_file(tmp_path, torch_ref):
    model = squeezenet.build_backbone((SMALL, SMALL, 3))
    model.save(tmp_path / "squeezenet.keras")
    loaded = keras.saving.load_model(tmp_path / "squeezenet.keras", safe_mode=True)
    x = torch_ref.images(SMALL, batch=1)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("size", [squeezenet.MIN_INPUT_SIZE, 32, 47])  # odd maps: ceil pads
def test_logits_match_torchvision_layout(size, torch_ref):
    model, images, expected = torch_ref.ported(
        _torch_squeezenet1_1(), squeezenet.build_backbone, squeezenet.load_torch_state_dict, size
    )
    assert np.count_nonzero(expected) > expected.size // 2
    # float32 on both sides; they differ in summation order only.
    np.testing.assert_allclose(model(images), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.torch
def test_backbone_loads_pth_file_through_safe_reader(tmp_path, torch_ref):
    reference = _torch_squeezenet1_1()
    pth = tmp_path / "squeezenet1_1.pth"
    model, images = torch_ref.from_pth(reference, squeezenet.build_backbone, pth, SMALL)
    pooled = torch_ref.logits(lambda x: reference.features(x).mean(dim=(2, 3)), images)
    np.testing.assert_allclose(model(images), pooled, rtol=1e-4, atol=1e-5)


def _fake_state_dict(model: keras.Model) -> dict[str, np.ndarray]:
    """torchvision names and shapes, zeros: enough to exercise the key/shape checks."""
    state = {}
    for block in squeezenet.blocks(model):
        for layer in block:
            torch_name = layer.name.replace("_", ".")
            kh, kw, cin, cout = layer.kernel.shape
            state[f"{torch_name}.weight"] = np.zeros((cout, cin, kh, kw), "float32")
            state[f"{torch_name}.bias"] = np.zeros(cout, "float32")
    return state


def test_loading_checks_keys_and_shapes():
    classifier = squeezenet.build_backbone((SMALL, SMALL, 3), include_top=True)
    backbone = squeezenet.build_backbone((SMALL, SMALL, 3))
    state = _fake_state_dict(classifier)
    squeezenet.load_torch_state_dict(backbone, state)  # classifier.1 skipped without a top

    renamed = {k.replace("features.12.", "features.13."): v for k, v in state.items()}
    with pytest.raises(StateDictMismatchError, match=r"missing key 'features\.12\.squeeze"):
        squeezenet.load_torch_state_dict(backbone, renamed)

    squeezenet_1_0_stem = {**state, "features.0.weight": np.zeros((96, 3, 7, 7), "float32")}
    with pytest.raises(StateDictMismatchError, match=r"shape mismatch for 'features\.0\.weight'"):
        squeezenet.load_torch_state_dict(backbone, squeezenet_1_0_stem)


@pytest.mark.slow
@pytest.mark.torch
def test_logits_match_torchvision_layout_at_full_size(torch_ref):
    model, images, expected = torch_ref.ported(
        _torch_squeezenet1_1(),
        squeezenet.build_backbone,
        squeezenet.load_torch_state_dict,
        squeezenet.INPUT_SIZE,
        batch=1,
    )
    np.testing.assert_allclose(model(images), expected, rtol=1e-4, atol=1e-5)
