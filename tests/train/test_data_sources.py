"""The trainer on both data sources: with augmentation on, the same seed repeats a run
exactly, a run stopped after epoch 1 and resumed ends as the uninterrupted one, and
config.json records the source used and why (what ``auto`` picked)."""

from __future__ import annotations

import csv
import json
import pathlib
import warnings

import pytest

from tests import tiny_registry
from tlmed_keras.data import catalog, shards, sources
from tlmed_keras.train.trainer import train_and_evaluate


class Killed(Exception):
    pass


def _kill_after_first(epoch, phase, model):
    if epoch == 1:
        raise Killed


def _losses(workdir) -> list[tuple[str, str, str]]:
    with open(workdir / "history.csv") as stream:
        return [(row["phase"], row["loss"], row["val_loss"]) for row in csv.DictReader(stream)]


@pytest.mark.parametrize(("source", "augment"), [("memory", "flip"), ("stream", "basic")])
def test_augmented_runs_repeat_and_resume_exactly(tiny_config, tmp_path, source, augment):
    config = tiny_config(data_source=source, augment=augment, max_steps_per_epoch=3)
    said = []

    def say(*args, **kwargs):
        said.append(" ".join(map(str, args)))

    first = train_and_evaluate(config, tmp_path / "a", registry=tiny_registry, say=say)
    assert any(line.startswith(f"data source: {source} (--data_source={source}") for line in said)
    recorded = json.loads((tmp_path / "a" / "config.json").read_text())
    assert recorded["data_source"] == source
    assert recorded["data_source_reason"] in said
    with pytest.raises(Killed):
        train_and_evaluate(
            config, tmp_path / "c", registry=tiny_registry, epoch_end_hook=_kill_after_first
        )
    resumed = train_and_evaluate(config, tmp_path / "c", registry=tiny_registry, say=say)
    assert len(_losses(tmp_path / "a")) == 2
    # Epoch 1 of run c repeats run a (same seed), epoch 2 continues it after the resume.
    assert _losses(tmp_path / "a") == _losses(tmp_path / "c")
    assert resumed["val"] == first["val"] and resumed["test"] == first["test"]


def test_streamed_full_epochs_end_without_keras_running_out_of_data(tiny_config, tmp_path):
    # Whole epochs (no step cap) and evaluation: a stream of unknown length made Keras read
    # past its last batch and warn "Your input ran out of data" once per fit and predict.
    config = tiny_config(data_source="stream", finetune_epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_and_evaluate(config, tmp_path / "run", registry=tiny_registry, say=lambda *a, **k: 0)
    assert not [w for w in caught if "ran out of data" in str(w.message)]
    assert len(_losses(tmp_path / "run")) == 2  # head + fine-tune epoch, both whole


def test_damaged_shard_stops_training_naming_the_file(tiny_config, tmp_path):
    config = tiny_config(data_source="stream", max_steps_per_epoch=1)
    info = catalog.get_info(config.data, config.size)
    shard_set = shards.prepare_shards(
        pathlib.Path(config.data_dir) / info.filename, info, say=lambda *a: None
    )
    victim = shard_set.folder / shard_set.splits["train"][0].file
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: found only when read
    victim.write_bytes(bytes(data))
    with pytest.raises(shards.CorruptShardError, match=f"Shard {victim} is damaged"):
        train_and_evaluate(config, tmp_path / "run", registry=tiny_registry, say=lambda *a, **k: 0)


@pytest.mark.parametrize(("ram", "picked"), [(1 << 40, "memory"), (0, "stream")])
def test_auto_choice_and_its_reason_are_recorded_in_config_json(
    tiny_config, tmp_path, monkeypatch, ram, picked
):
    monkeypatch.setattr(sources, "available_ram_bytes", lambda: ram)
    config = tiny_config(data_source="auto", finetune_epochs=0, max_steps_per_epoch=1)
    said = []
    say = lambda *args, **kwargs: said.append(" ".join(map(str, args)))  # noqa: E731
    train_and_evaluate(config, tmp_path / "run", registry=tiny_registry, say=say)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["data_source"] == picked
    assert recorded["data_source_reason"].startswith(f"data source: {picked} (auto:")
    assert recorded["data_source_reason"] in said  # the line the run printed
    assert recorded["flags"]["data_source"] == "auto"  # as given: what a resume must match


def test_resume_keeps_the_source_auto_picked_at_the_start(tiny_config, tmp_path, monkeypatch):
    # auto streams at the start (no RAM to spare), then RAM frees up before the resume: the
    # resumed run must keep streaming, or its epoch order would differ from the uninterrupted.
    config = tiny_config(data_source="auto", augment="flip", max_steps_per_epoch=3)
    quiet = lambda *args, **kwargs: None  # noqa: E731
    monkeypatch.setattr(sources, "available_ram_bytes", lambda: 0)
    train_and_evaluate(config, tmp_path / "a", registry=tiny_registry, say=quiet)
    with pytest.raises(Killed):
        train_and_evaluate(
            config, tmp_path / "c", registry=tiny_registry, epoch_end_hook=_kill_after_first
        )
    monkeypatch.setattr(sources, "available_ram_bytes", lambda: 1 << 40)
    said = []
    train_and_evaluate(
        config, tmp_path / "c", registry=tiny_registry, say=lambda *a, **k: said.append(a[0])
    )
    kept = "data source: stream (auto: as when this run started"
    assert any(line.startswith(kept) for line in said)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "c")


def test_auto_keeps_a_recorded_source_unless_memory_no_longer_fits(tmp_path):
    path = tmp_path / "tiny.npz"
    import numpy as np

    np.savez(path, train_images=np.zeros((4, 28, 28), np.uint8))  # 3,136 bytes
    assert sources.choose("auto", path, available=1 << 30, recorded="stream").source == "stream"
    assert sources.choose("auto", path, available=1 << 30, recorded="memory").source == "memory"
    late = sources.choose("auto", path, available=100, recorded="memory")
    assert late.source == "stream" and "order will differ" in late.reason
    assert sources.choose("stream", path, available=1 << 30, recorded="memory").source == "stream"


def test_every_host_of_a_multi_host_stream_runs_the_whole_epoch(tiny_config, monkeypatch):
    # 30 train images in 8 shards over 3 hosts: the hosts' shares differ. Each host must
    # still yield the epoch's global step count, or a host that ran out would leave the
    # others waiting in a collective forever.
    import keras

    from tlmed_keras.train import setup

    config = tiny_config(n={"train": 30, "val": 8, "test": 8}, data_source="stream", batch_size=6)
    spec = tiny_registry.get_spec(config.model)
    info = catalog.get_info(config.data, config.size)
    s = setup.build_setup(config, spec, info, devices=1, say=lambda *a, **k: None)
    shard_set = s.splits["train"][0].shard_set
    per_host = [sum(shard.count for shard in shard_set.splits["train"][h::3]) for h in range(3)]
    assert min(per_host) < s.steps * 2 <= max(per_host)
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    try:
        for host in range(3):
            monkeypatch.setattr(setup, "_hosts", lambda host=host: (3, host))
            batches = list(setup.train_dataset(config, s, epoch=0).take(s.steps))
            assert len(batches) == s.steps == 5
            assert all(len(x) == 6 // 3 for x, _ in batches)  # this host's share of a batch
    finally:
        keras.distribution.set_distribution(previous)


def _kill_after_second(epoch, phase, model):
    if epoch == 2:
        raise Killed


def test_resume_inside_a_phase_repeats_the_uninterrupted_run(tiny_config, tmp_path):
    # Killed after epoch 2, the first of 3 fine-tuning epochs: the resumed run compiles the
    # phase afresh, and Keras' JAX trainer then reads one batch of the epoch's dataset to
    # build its metrics before rewinding it. The epoch's order must not depend on how often
    # its dataset is iterated, or the resumed epoch trains on other batches.
    config = tiny_config(finetune_epochs=3, warmup_epochs=0, max_steps_per_epoch=3)
    quiet = lambda *args, **kwargs: None  # noqa: E731
    train_and_evaluate(config, tmp_path / "a", registry=tiny_registry, say=quiet)
    with pytest.raises(Killed):
        train_and_evaluate(
            config,
            tmp_path / "b",
            registry=tiny_registry,
            say=quiet,
            epoch_end_hook=_kill_after_second,
        )
    train_and_evaluate(config, tmp_path / "b", registry=tiny_registry, say=quiet)
    assert [row[0] for row in _losses(tmp_path / "a")] == ["head"] + ["finetune"] * 3
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")
