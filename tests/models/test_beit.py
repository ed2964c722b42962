"""BEiT: build, blocks, serialization, and parity with transformers' BeitForImageClassification.

Everything runs on a tiny configuration (32 px, patch 8, width 32, 2 layers, 2 heads); the
reference model is randomly initialised (no download), with every parameter re-drawn so that
zero-initialised ones (bias tables, CLS token) cannot hide a wrong mapping.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

from tlmed_keras.models import beit
from tlmed_keras.models.converters.huggingface import bilinear_resize
from tlmed_keras.models.converters.state_dict import StateDictMismatchError

TINY = beit.BeitConfig(
    patch_size=8, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64
)
SIZE = 32  # the reference's config.image_size: a 4x4 window


def _hf_beit(image_size: int = SIZE, num_labels: int = 10):
    torch = pytest.importorskip("torch", reason="BEiT parity needs PyTorch")
    transformers = pytest.importorskip("transformers", reason="BEiT parity needs transformers")
    config = transformers.BeitConfig(
        image_size=image_size,
        patch_size=TINY.patch_size,
        hidden_size=TINY.hidden_size,
        num_hidden_layers=TINY.num_layers,
        num_attention_heads=TINY.num_heads,
        intermediate_size=TINY.intermediate_size,
        num_labels=num_labels,
        # microsoft/beit-base-patch16-224's choices (some differ from BeitConfig's defaults):
        use_relative_position_bias=True,
        use_shared_relative_position_bias=False,
        use_absolute_position_embeddings=False,
        use_mean_pooling=True,
        layer_scale_init_value=0.1,
        layer_norm_eps=1e-12,
        hidden_act="gelu",
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = transformers.BeitForImageClassification(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.3)
    return model, config


# transformers 5 names -> the names of transformers 4 and of the files on the Hub.
_LEGACY_NAMES = (
    (r"\.layers\.(\d+)\.", r".encoder.layer.\1."),
    (
        r"\.relative_position_bias\.relative_position_bias_table",
        ".attention.attention.relative_position_bias.relative_position_bias_table",
    ),
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
)


def _legacy_name(key: str) -> str:
    for pattern, replacement in _LEGACY_NAMES:
        key = re.sub(pattern, replacement, key)
    return key


# ---- without torch ----


def test_backbone_outputs_pooled_features(torch_ref):
    model = beit.build_backbone((SIZE, SIZE, 3), config=TINY)
    assert model(torch_ref.images(SIZE)).shape == (2, TINY.hidden_size)
    table = model.get_layer("layer_0").relative_position_bias_table
    assert tuple(table.shape) == ((2 * 4 - 1) ** 2 + 3, TINY.num_heads)


def test_base_configuration_matches_the_checkpoint():
    assert (beit.CONFIG.hidden_size, beit.CONFIG.num_layers, beit.CONFIG.num_heads) == (768, 12, 12)
    assert beit.CONFIG.patch_size == 16 and beit.CONFIG.layer_norm_eps == 1e-12
    assert beit.NORMALIZATION == "half"
    assert beit.SPEC.num_blocks == 13  # patch embedding + 12 layers, as blocks() groups them


@pytest.mark.parametrize("include_top", [False, True])
def test_blocks_cover_every_trainable_weight(include_top):
    model = beit.build_backbone((SIZE, SIZE, 3), include_top=include_top, config=TINY)
    groups = beit.blocks(model)
    assert len(groups) == 1 + TINY.num_layers + include_top
    in_blocks = {id(w) for block in groups for layer in block for w in layer.trainable_weights}
    assert in_blocks == {id(w) for w in model.trainable_weights}


def test_rejects_sizes_that_are_not_whole_patches():
    with pytest.raises(ValueError, match="multiples of the patch size 8"):
        beit.build_backbone((36, 36, 3), config=TINY)
    with pytest.raises(ValueError, match="RGB"):
        beit.build_backbone((32, 32, 1), config=TINY)


def test_model_round_trips_through_keras_file(tmp_path, torch_ref):
    model = beit.build_backbone((SIZE, SIZE, 3), include_top=True, num_classes=3, config=TINY)
    for weight in model.trainable_weights:  # make the zero-initialised tables count
        weight.assign(np.random.default_rng(3).normal(size=weight.shape) * 0.1)
    model.save(tmp_path / "beit.keras")
    loaded = keras.saving.load_model(tmp_path / "beit.keras", safe_mode=True)
    x = torch_ref.images(SIZE, batch=1)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-6)


def test_drop_path_acts_in_training_only_and_fits(torch_ref):
    config = beit.BeitConfig(**{**TINY.__dict__, "drop_path_rate": 0.9})
    model = beit.build_backbone((SIZE, SIZE, 3), include_top=True, num_classes=2, config=config)
    x = torch_ref.images(SIZE, batch=8)
    np.testing.assert_allclose(model(x), model(x))
    assert not np.allclose(model(x, training=True), model(x))
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    history = model.fit(x, np.arange(8) % 2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_bias_table_resize_keeps_cls_rows_and_identity():
    table = np.random.default_rng(0).normal(size=(7 * 7 + 3, 2)).astype("float32")
    np.testing.assert_array_equal(beit.resize_bias_table(table, (4, 4)), table)
    resized = beit.resize_bias_table(table, (6, 6))
    assert resized.shape == (11 * 11 + 3, 2)
    np.testing.assert_array_equal(resized[-3:], table[-3:])
    with pytest.raises(StateDictMismatchError, match="not .* square window"):
        beit.resize_bias_table(table[:-1], (4, 4))


def test_loading_names_missing_unexpected_and_mis_shaped_keys():
    model = beit.build_backbone((SIZE, SIZE, 3), config=TINY)
    with pytest.raises(StateDictMismatchError, match=r"missing key 'beit\.embeddings\.cls_token'"):
        beit.load_hf_state_dict(model, {})
    wider = {"beit.embeddings.cls_token": np.zeros((1, 1, 64), "float32")}  # hidden 64
    with pytest.raises(StateDictMismatchError, match=r"shape mismatch for 'beit\.embeddings"):
        beit.load_hf_state_dict(model, wider)


def test_unknown_weights_file_is_refused(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="unknown suffix '.npz'"):
        beit.build_backbone((SIZE, SIZE, 3), weights=path, config=TINY)


# ---- parity with transformers ----


@pytest.mark.torch
@pytest.mark.parametrize("window", [(4, 4), (3, 5), (14, 14)])
def test_relative_position_index_matches_transformers(window):
    pytest.importorskip("torch", reason="index parity needs PyTorch")
    from transformers.models.beit.modeling_beit import BeitRelativePositionBias

    expected = BeitRelativePositionBias.generate_relative_position_index(window).numpy()
    np.testing.assert_array_equal(beit.relative_position_index(window), expected)


@pytest.mark.torch
@pytest.mark.parametrize(
    ("grid", "size"), [((7, 7), (11, 11)), ((7, 7), (5, 5)), ((27, 27), (3, 9))]
)
def test_bilinear_resize_matches_torch_interpolate(grid, size):
    torch = pytest.importorskip("torch", reason="interpolation parity needs PyTorch")
    values = np.random.default_rng(0).normal(size=(*grid, 3)).astype("float32")
    nchw = torch.from_numpy(values).permute(2, 0, 1)[None]
    expected = torch.nn.functional.interpolate(nchw, size=size, mode="bilinear")
    expected = expected[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(bilinear_resize(values, size), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("size", [SIZE, 48, 24])  # the checkpoint's window, larger, smaller
def test_logits_match_transformers(size, torch_ref):
    reference, _ = _hf_beit()
    model, images, expected = torch_ref.ported(
        reference, beit.build_backbone, beit.load_hf_state_dict, size, num_classes=10, config=TINY
    )
    # At 48 / 24 px transformers resizes each bias table at run time; we resized at load.
    np.testing.assert_allclose(model(images), expected, atol=1e-4, rtol=0)


@pytest.mark.torch
def test_backbone_features_match_transformers_pooler(tmp_path, torch_ref):
    torch = pytest.importorskip("torch", reason="BEiT parity needs PyTorch")
    from safetensors.torch import save_file

    reference, _ = _hf_beit()
    save_file(reference.beit.state_dict(), tmp_path / "model.safetensors")  # bare BeitModel
    model = beit.build_backbone(
        (SIZE, SIZE, 3), weights=tmp_path / "model.safetensors", config=TINY
    )
    images = torch_ref.images(SIZE)
    with torch.no_grad():
        pooled = reference.beit(torch.from_numpy(images.transpose(0, 3, 1, 2))).pooler_output
    np.testing.assert_allclose(model(images), pooled.numpy(), atol=1e-4, rtol=0)


@pytest.mark.torch
def test_hub_layout_safetensors_loads_like_transformers(tmp_path, torch_ref):
    """A file named as the Hub's model.safetensors is (transformers 4 names, index buffers),
    which transformers 5 itself loads to the same weights, gives the same logits here."""
    torch = pytest.importorskip("torch", reason="BEiT parity needs PyTorch")
    import transformers
    from safetensors.torch import save_file

    reference, config = _hf_beit()
    legacy = {_legacy_name(k): v.contiguous() for k, v in reference.state_dict().items()}
    index = beit.relative_position_index((4, 4)).astype("int64")
    for i in range(TINY.num_layers):
        key = f"beit.encoder.layer.{i}.attention.attention.relative_position_bias"
        legacy[f"{key}.relative_position_index"] = torch.from_numpy(index.copy())
    save_file(legacy, tmp_path / "model.safetensors")
    config.save_pretrained(tmp_path)

    reloaded = transformers.BeitForImageClassification.from_pretrained(tmp_path).eval()
    model = beit.build_backbone(
        (SIZE, SIZE, 3), weights=tmp_path / "model.safetensors", include_top=True,
        num_classes=10, config=TINY,
    )  # fmt: skip
    images = torch_ref.images(SIZE)
    for key, value in reference.state_dict().items():  # transformers reads these names too
        np.testing.assert_array_equal(reloaded.state_dict()[key].numpy(), value.numpy())
    np.testing.assert_allclose(
        model(images), torch_ref.logits(reference, images), atol=1e-4, rtol=0
    )


@pytest.mark.torch
def test_transformers_module_checkpoint_is_refused_with_the_extra_key(torch_ref):
    transformers = pytest.importorskip("transformers", reason="needs transformers")
    pytest.importorskip("torch", reason="needs PyTorch")
    reference, config = _hf_beit()
    state = torch_ref.state_dict(reference)
    absolute = config.to_dict() | {"use_absolute_position_embeddings": True}
    variant = transformers.BeitForImageClassification(transformers.BeitConfig(**absolute))
    state["beit.embeddings.position_embeddings"] = torch_ref.state_dict(variant)[
        "beit.embeddings.position_embeddings"
    ]
    model = beit.build_backbone((SIZE, SIZE, 3), include_top=True, num_classes=10, config=TINY)
    with pytest.raises(StateDictMismatchError, match=r"unexpected key 'beit\.embeddings\.position"):
        beit.load_hf_state_dict(model, state)


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize("size", [beit.INPUT_SIZE, 64])
def test_base_configuration_matches_transformers(size, torch_ref):
    """The real beit-base-patch16-224 shape (random weights): 12 heads of 64, 27x27 tables."""
    torch = pytest.importorskip("torch", reason="BEiT parity needs PyTorch")
    transformers = pytest.importorskip("transformers", reason="BEiT parity needs transformers")
    config = transformers.BeitConfig(
        use_relative_position_bias=True,
        use_mean_pooling=True,
        use_absolute_position_embeddings=False,
        layer_scale_init_value=0.1,
        num_labels=1000,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    reference = transformers.BeitForImageClassification(config).eval()
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if "relative_position_bias_table" in name or "cls_token" in name:
                param.copy_(torch.randn_like(param) * 0.3)
    model, images, expected = torch_ref.ported(
        reference, beit.build_backbone, beit.load_hf_state_dict, size, batch=1
    )
    np.testing.assert_allclose(model(images), expected, atol=1e-4, rtol=0)
