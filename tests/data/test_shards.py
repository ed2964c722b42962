"""Streamed mode: the npz converted once into raw image shards, read back through tf.data."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tests.conftest import synthetic_arrays
from tlmed_keras.data import catalog, load_arrays, shards, sources
from tlmed_keras.data.pipeline import PipelineOptions, make_dataset, make_stream_dataset
from tlmed_keras.data.preprocess import Preprocess

SIZES = {"train": 60, "val": 12, "test": 10}
SMALL_SHARDS = 28 * 28 * 3 * 5  # ~5 images a shard: many shards from a tiny file
UNIT = Preprocess(28, "unit")
STREAM = PipelineOptions(batch_size=7, preprocess=UNIT, training=True, seed=3)


@pytest.fixture
def blood(tmp_path):
    """A synthetic uncompressed bloodmnist npz (RGB, 8 classes) and its catalog entry."""
    info = catalog.get_info("bloodmnist", 28)
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / info.filename
    np.savez(path, **synthetic_arrays("bloodmnist", 28, SIZES))
    return path, info


def _prepare(blood, **kwargs):
    path, info = blood
    return shards.prepare_shards(
        path, info, shard_bytes=SMALL_SHARDS, say=lambda *a: None, **kwargs
    )


def _raw(dataset) -> tuple[np.ndarray, np.ndarray]:
    """All (uint8 images, labels) of a dataset built with "unit" normalisation."""
    xs, ys = zip(*dataset.as_numpy_iterator(), strict=True)
    return np.rint(np.concatenate(xs) * 255).astype(np.uint8), np.concatenate(ys)


def _keys(images, labels) -> list[bytes]:
    return sorted(x.tobytes() + bytes([int(y)]) for x, y in zip(images, labels, strict=True))


def _stream(shard_set, split="train", *, pad_to=0, num_hosts=1, host_index=0, **changes):
    """The streamed split, read with ``STREAM`` options (``changes`` replace some of them)."""
    return make_stream_dataset(
        shard_set,
        split,
        options=dataclasses.replace(STREAM, **changes),
        pad_to=pad_to,
        num_hosts=num_hosts,
        host_index=host_index,
    )


def test_streamed_epoch_is_the_in_memory_multiset_and_the_seed_fixes_the_batches(blood):
    shard_set = _prepare(blood)
    assert len(shard_set.splits["train"]) >= 8 and shard_set.count("train") == SIZES["train"]
    arrays = load_arrays("bloodmnist", 28, blood[0].parent, verify=False, cache_dir=None)
    options = PipelineOptions(batch_size=7, preprocess=UNIT, training=True)
    memory = _raw(make_dataset(*arrays["train"], info=arrays.info, options=options))
    streamed = _raw(_stream(shard_set))
    assert _keys(*streamed) == _keys(*memory)
    assert not np.array_equal(streamed[0], arrays["train"][0])  # shuffled
    again, other = _raw(_stream(shard_set)), _raw(_stream(shard_set, seed=4))
    np.testing.assert_array_equal(streamed[0], again[0])  # same seed: the same batches
    assert not np.array_equal(streamed[0], other[0])  # next epoch's seed: another order


def test_evaluation_keeps_the_stored_order_and_pads_to_whole_batches(blood):
    shard_set = _prepare(blood)
    images, labels = np.load(blood[0])["val_images"], np.load(blood[0])["val_labels"]
    x, y = _raw(_stream(shard_set, "val", training=False, batch_size=5, pad_to=15))
    assert len(x) == 15
    np.testing.assert_array_equal(x[:12], images)
    np.testing.assert_array_equal(y[:12], labels[:, 0])


@pytest.mark.parametrize(
    ("split", "changes", "pad_to", "batches"),
    [
        ("train", {"drop_remainder": True}, 0, 60 // 7),
        ("train", {"drop_remainder": False}, 0, -(-60 // 7)),
        ("val", {"training": False, "batch_size": 5}, 15, 3),
        ("test", {"training": False, "batch_size": 4}, 0, 3),  # 10 images: 4 + 4 + 2
    ],
)
def test_the_stream_states_its_length_in_batches(blood, split, changes, pad_to, batches):
    """Keras reads past a dataset of unknown length and warns "Your input ran out of data"
    every epoch; a stated length ends the epoch on the last batch."""
    dataset = _stream(_prepare(blood), split, pad_to=pad_to, **changes)
    assert int(dataset.cardinality()) == batches
    assert sum(1 for _ in dataset) == batches
    one_host = _stream(_prepare(blood), num_hosts=3, host_index=1, drop_remainder=False)
    assert int(one_host.cardinality()) == sum(1 for _ in one_host)  # this host's share


def test_the_stream_runs_without_the_autotuner(blood):
    """As the in-memory pipeline (``pipeline.without_autotuning``): the autotuner's thread
    made each fit/predict return wait, and streaming was no slower without it."""
    assert _stream(_prepare(blood)).options().autotune.enabled is False


def test_hosts_read_disjoint_shards_that_cover_the_split(blood):
    shard_set = _prepare(blood)
    parts = [_raw(_stream(shard_set, num_hosts=3, host_index=i)) for i in range(3)]
    whole = _raw(_stream(shard_set))
    assert sum(len(p[0]) for p in parts) == SIZES["train"]
    joined = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    assert _keys(*joined) == _keys(*whole)
    with pytest.raises(ValueError, match="shards for 99 hosts"):
        shard_set.host_shards("train", num_hosts=99)


def test_second_prepare_reuses_and_a_changed_npz_is_converted_anew(blood):
    first = _prepare(blood)
    manifest = first.folder / shards.MANIFEST
    stamp, before = manifest.stat().st_mtime_ns, json.loads(manifest.read_text())
    assert _prepare(blood).splits == first.splits
    assert manifest.stat().st_mtime_ns == stamp  # reused, not rewritten
    path, _ = blood
    np.savez(path, **synthetic_arrays("bloodmnist", 28, SIZES, seed=1))
    second = _prepare(blood)
    after = json.loads((second.folder / shards.MANIFEST).read_text())
    assert after["source"]["md5"] != before["source"]["md5"]
    assert second.splits != first.splits  # new pixels, new checksums


class Interrupted(Exception):
    pass


def test_interrupted_conversion_is_never_used_and_is_redone(blood, monkeypatch):
    path, info = blood
    real = shards._write_split

    def die_at_val(npz_path, split, *args):
        if split == "val":
            raise Interrupted
        return real(npz_path, split, *args)

    monkeypatch.setattr(shards, "_write_split", die_at_val)
    with pytest.raises(Interrupted):
        _prepare(blood)
    assert not shards.shard_folder(path).exists()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp folder left
    # A kill -9 leaves its temp folder behind: the next conversion removes it.
    leftover = path.parent / f".{shards.shard_folder(path).name}.tmp-999999999-abc"
    (leftover).mkdir()
    (leftover / "train-00000-of-00009.u8").write_bytes(b"half")
    monkeypatch.setattr(shards, "_write_split", real)
    shard_set = _prepare(blood)
    assert not leftover.exists()
    assert shard_set.count("train") == SIZES["train"]
    # A folder without its manifest (copied halfway, say) is not trusted either.
    (shard_set.folder / shards.MANIFEST).unlink()
    assert _prepare(blood).count("val") == SIZES["val"]


def _flip_a_byte(path) -> bytes:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only its checksum finds it
    path.write_bytes(bytes(data))
    return bytes(data)


def test_damaged_shard_is_an_error_naming_the_file(blood):
    shard_set = _prepare(blood)
    victim = shard_set.folder / shard_set.splits["train"][2].file
    data = _flip_a_byte(victim)
    # Written since it was verified: re-hashed when the shards are next opened.
    with pytest.raises(shards.CorruptShardError, match=f"Shard {victim} is damaged: its SHA-1"):
        _prepare(blood)
    with pytest.raises(shards.CorruptShardError, match=str(victim)):
        shard_set.verify()
    victim.write_bytes(data[:-10])  # truncated: found by its size
    with pytest.raises(shards.CorruptShardError, match=f"{victim}.*Delete"):
        _prepare(blood)


def test_damaged_labels_file_is_an_error_naming_it(blood):
    shard_set = _prepare(blood)
    victim = shard_set.folder / shard_set.labels["val"].file
    _flip_a_byte(victim)
    with pytest.raises(shards.CorruptShardError, match=f"Shard {victim} is damaged"):
        _prepare(blood)


def test_unchanged_shards_are_not_hashed_again(blood, monkeypatch):
    _prepare(blood)
    hashed = []
    monkeypatch.setattr(shards, "_sha1", lambda path: hashed.append(path) or "")
    assert _prepare(blood).count("train") == SIZES["train"]
    assert hashed == []  # sizes and times as verified: no file read


def test_shard_gone_while_streaming_is_an_error_naming_it(blood):
    shard_set = _prepare(blood)
    victim = shard_set.folder / shard_set.splits["train"][3].file
    victim.unlink()
    with (
        pytest.raises(shards.CorruptShardError, match=f"Shard {victim} is missing"),
        shards.naming_bad_shard(shard_set),
    ):
        for _ in _stream(shard_set):
            pass
    # Only the shard sets of this block are checked: TensorFlow's own error otherwise.
    with pytest.raises(Exception) as raised, shards.naming_bad_shard():
        for _ in _stream(shard_set):
            pass
    assert not isinstance(raised.value, shards.CorruptShardError)


def test_shards_of_the_earlier_tfrecord_format_are_converted_anew(blood):
    first = _prepare(blood)
    manifest = first.folder / shards.MANIFEST
    text = manifest.read_text()
    assert '"format": 2' in text
    manifest.write_text(text.replace('"format": 2', '"format": 1'))
    again = _prepare(blood)
    assert json.loads((again.folder / shards.MANIFEST).read_text())["format"] == shards.FORMAT
    assert _keys(*_raw(_stream(again))) == _keys(*_raw(_stream(first)))


def test_auto_source_says_which_and_why(blood):
    path, _ = blood
    size = sources.splits_bytes(path)
    assert size == sum(n * (28 * 28 * 3 + 1) for n in SIZES.values())
    source, reason = sources.choose("auto", path, available=100 * size)
    assert source == "memory" and reason.startswith("data source: memory (auto:")
    source, reason = sources.choose("auto", path, available=size)
    assert source == "stream" and "exceed 50% of" in reason
    assert sources.choose("stream", path)[0] == "stream"
    with pytest.raises(ValueError, match="Bad --data_source='disk'"):
        sources.choose("disk", path)


def test_read_only_data_folder_puts_shards_in_the_user_cache(blood, tmp_path, monkeypatch):
    monkeypatch.setenv("TLMED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(shards.os, "access", lambda path, mode: False)  # as if read-only
    shard_set = _prepare(blood)
    assert shard_set.folder.is_relative_to(tmp_path / "cache" / "shards")
    assert not shards.shard_folder(blood[0]).exists()
    assert shard_set.count("test") == SIZES["test"]
