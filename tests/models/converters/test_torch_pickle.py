"""The torch-free, restricted .pth reader."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from tlmed_keras.models.converters import torch_pickle
from tlmed_keras.models.converters.torch_pickle import (
    CheckpointFormatError,
    UnsafeCheckpointError,
    load_state_dict,
)

MOBILENET_PTH = "weights/torchvision/mobilenet_v2-b0353104.pth"


class _RunsCode:
    """Unpickling this object calls ``os.system``: what a hostile .pth does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _legacy_pickle_stream(payload, raw: bytes | None = None) -> bytes:
    """torch's legacy layout around ``payload`` (or ready-made pickle bytes), no storages."""
    out = io.BytesIO()
    for value in (torch_pickle.LEGACY_MAGIC_NUMBER, torch_pickle.LEGACY_PROTOCOL_VERSION, {}):
        pickle.dump(value, out, protocol=2)
    out.write(raw if raw is not None else pickle.dumps(payload, protocol=2))
    pickle.dump([], out, protocol=2)  # the storage keys
    return out.getvalue()


def test_reads_genuine_torchvision_legacy_file(shared_dir):
    state = load_state_dict(shared_dir / MOBILENET_PTH)
    assert len(state) == 314
    first = state["features.0.0.weight"]
    assert first.shape == (32, 3, 3, 3) and first.dtype == np.float32
    assert state["classifier.1.weight"].shape == (1000, 1280)
    params = sum(v.size for k, v in state.items() if "running" not in k and "num_batches" not in k)
    assert params == 3_504_872  # the count the shared README gives for this file
    assert np.isfinite(first).all() and first.std() > 0.01


def test_malicious_legacy_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_pickle_stream({"w": _RunsCode(f"touch {marker}")}))
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|os)\.system"):
        load_state_dict(path)
    assert not marker.exists(), "the payload ran"


def test_malicious_zip_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps(_RunsCode(f"touch {marker}")))
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|os)\.system"):
        load_state_dict(path)
    assert not marker.exists(), "the payload ran"


def test_builtin_eval_is_refused(tmp_path):
    path = tmp_path / "eval.pth"
    # GLOBAL builtins.eval, then call it: a hand-made pickle as an attacker would write.
    payload = b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R."
    path.write_bytes(_legacy_pickle_stream(None, raw=payload))
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.eval"):
        load_state_dict(path)


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointFormatError, match="noise.pth"):
        load_state_dict(path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_state_dict(tmp_path / "missing.pth")


def test_object_without_tensors_is_refused(tmp_path):
    path = tmp_path / "plain.pth"
    path.write_bytes(_legacy_pickle_stream(collections.OrderedDict(epoch=3)))
    with pytest.raises(CheckpointFormatError, match="no state dict"):
        load_state_dict(path)


def test_truncated_legacy_storage_is_refused(shared_dir, tmp_path):
    data = (shared_dir / MOBILENET_PTH).read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError):
        load_state_dict(path)


def test_out_of_bounds_tensor_geometry_is_refused():
    flat = np.arange(4, dtype=np.float32)
    with pytest.raises(CheckpointFormatError, match="runs past"):
        torch_pickle._strided_copy(flat, 2, (2, 2), (2, 1))
    got = torch_pickle._strided_copy(flat, 0, (2, 2), (1, 2))  # transposed view
    np.testing.assert_array_equal(got, [[0, 2], [1, 3]])
    assert struct.calcsize("<q") == 8


@pytest.mark.torch
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_matches_torch_for_both_formats(tmp_path, zip_format):
    torch = pytest.importorskip("torch", reason="parity with torch.save needs PyTorch")
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=gen)
    state = collections.OrderedDict(
        conv=torch.randn(4, 3, 3, 3, generator=gen),
        transposed=base.t(),  # non-contiguous: exercises strides
        view=base[2:4],  # shares base's storage at an offset
        half=torch.randn(7, generator=gen).half(),
        bf16=torch.randn(3, generator=gen).bfloat16(),
        count=torch.tensor(17),
        mask=torch.tensor([True, False]),
        param=torch.nn.Parameter(torch.ones(2)),
    )
    path = tmp_path / "state.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    assert zipfile.is_zipfile(path) == zip_format
    got = load_state_dict(path)
    assert list(got) == list(state)
    for key, tensor in state.items():
        want = tensor.detach().float().numpy() if key == "bf16" else tensor.detach().numpy()
        value = got[key].astype(np.float32) if key == "bf16" else got[key]
        assert value.dtype == want.dtype, key
        np.testing.assert_array_equal(value, want, err_msg=key)


@pytest.mark.torch
def test_nested_training_checkpoint(tmp_path):
    torch = pytest.importorskip("torch", reason="writing a checkpoint needs PyTorch")
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {"w": torch.arange(3.0)}}, path)
    np.testing.assert_array_equal(load_state_dict(path)["w"], [0.0, 1.0, 2.0])
