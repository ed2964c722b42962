"""experiments.gpu.kit / bundle: pieces cut here, checked, rebuilt and installed "there".

"There" is played by a fresh venv with no network: the kit's device command runs under its
python, exactly as on the GPU machine, and pip installs with --no-index --no-deps --target.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import venv
import zipfile

import pytest

from experiments.gpu import bundle, check, kit

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Any index pip might try is a closed local port: the tests never reach the network.
OFFLINE = {"PIP_NO_INDEX": "1", "PIP_INDEX_URL": "http://127.0.0.1:9/", "PIP_RETRIES": "0"}


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(folder: pathlib.Path, name: str = "kitprobe", padding: int = 6000) -> pathlib.Path:
    """A real, installable pure-Python wheel; ``padding`` bytes of incompressible data make
    it span several small pieces."""
    info = f"{name}-0.1.dist-info"
    files = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{name}/padding.bin": os.urandom(padding),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = [_record_line(n, d) for n, d in files.items()] + [f"{info}/RECORD,,"]
    path = folder / f"{name}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for entry, data in files.items():
            whl.writestr(entry, data)
        whl.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


@pytest.fixture
def packed(tmp_path):
    """A wheel and a data file packed in 2 KiB pieces: (manifest, pieces folder, originals)."""
    wheel = make_wheel(tmp_path)
    data = tmp_path / "breastmnist.npz"
    data.write_bytes(os.urandom(3000))
    pieces = tmp_path / "pieces"
    manifest = bundle.pack([(wheel, "wheel"), (data, "data")], pieces, piece_bytes=2048)
    return manifest, pieces, {wheel.name: wheel, data.name: data}


def test_pieces_are_at_most_the_size_and_rebuild_the_files_byte_for_byte(packed, tmp_path):
    manifest, pieces, originals = packed
    total = sum(p.stat().st_size for p in originals.values())
    sizes = [p["size"] for p in manifest["pieces"]]
    assert max(sizes) == 2048 and sum(sizes) == total and len(sizes) == -(-total // 2048)
    for i, piece in enumerate(manifest["pieces"]):  # one folder per call, manifest inside
        folder = pieces / bundle.piece_folder(i)
        assert sorted(f.name for f in folder.iterdir()) == [bundle.MANIFEST, piece["name"]]
    store = tmp_path / "store"
    store.mkdir()
    for i, piece in enumerate(manifest["pieces"]):
        (store / piece["name"]).write_bytes(
            (pieces / bundle.piece_folder(i) / piece["name"]).read_bytes()
        )
    entries = bundle.reassemble(store, manifest, tmp_path / "rebuilt")
    assert [e["kind"] for e in entries] == ["wheel", "data"]
    for entry in entries:
        rebuilt = (tmp_path / "rebuilt" / entry["name"]).read_bytes()
        assert rebuilt == originals[entry["name"]].read_bytes()
        assert hashlib.sha256(rebuilt).hexdigest() == entry["sha256"]


def _store_all(manifest, pieces, store):
    store.mkdir(exist_ok=True)
    for i, piece in enumerate(manifest["pieces"]):
        (store / piece["name"]).write_bytes(
            (pieces / bundle.piece_folder(i) / piece["name"]).read_bytes()
        )


def test_a_corrupted_piece_is_refused_by_its_sha256(packed, tmp_path):
    manifest, pieces, _ = packed
    store = tmp_path / "store"
    _store_all(manifest, pieces, store)
    damaged = store / bundle.piece_name(1)
    data = bytearray(damaged.read_bytes())
    data[100] ^= 0xFF  # one flipped byte, same size
    damaged.write_bytes(bytes(data))
    with pytest.raises(bundle.BundleError, match=r"Piece piece-02\.bin is damaged.*send that"):
        bundle.check_piece(damaged, manifest)
    with pytest.raises(bundle.BundleError, match=r"piece-02\.bin is damaged"):
        bundle.reassemble(store, manifest, tmp_path / "rebuilt")


def test_a_missing_piece_is_named(packed, tmp_path):
    manifest, pieces, _ = packed
    store = tmp_path / "store"
    _store_all(manifest, pieces, store)
    (store / bundle.piece_name(2)).unlink()
    count = len(manifest["pieces"])
    with pytest.raises(
        bundle.BundleError, match=rf"Missing piece piece-03\.bin of {count}: send it"
    ):
        bundle.reassemble(store, manifest, tmp_path / "rebuilt")


def test_receive_keeps_pieces_in_any_order_and_reports_a_cold_restart(packed, tmp_path):
    manifest, pieces, _ = packed
    store = tmp_path / "gpukit"
    folders = [pieces / bundle.piece_folder(i) for i in range(len(manifest["pieces"]))]
    first = kit.receive(folders[0], store)
    assert first["cold"] is False
    assert first["missing"] == [bundle.piece_name(i) for i in range(1, len(folders))]
    # The machine went back between calls: /tmp/gpukit is gone, the next piece says so.
    shutil.rmtree(store)
    after = kit.receive(folders[1], store)
    assert after["cold"] is True and bundle.piece_name(0) in after["missing"]
    for folder in [*folders[2:], folders[0]]:
        status = kit.receive(folder, store)
    assert status == {"piece": bundle.piece_name(0), "missing": [], "cold": False}


def test_a_piece_of_another_pack_starts_the_set_again(packed, tmp_path):
    manifest, pieces, originals = packed
    store = tmp_path / "gpukit"
    kit.receive(pieces / "01", store)
    kit.receive(pieces / "02", store)
    other = bundle.pack([(originals["breastmnist.npz"], "data")], tmp_path / "other", 2048)
    status = kit.receive(tmp_path / "other" / "01", store)
    assert status["missing"] == [p["name"] for p in other["pieces"][1:]]
    assert sorted(f.name for f in (store / "pieces").iterdir()) == [bundle.piece_name(0)]


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """A new venv standing in for the device: ``(python, env)``. Its pip is the wheel that
    Python bundles for ensurepip, put on PYTHONPATH (pip runs from its wheel; installing it
    into the venv would take tens of seconds on a busy machine). No network either way."""
    import ensurepip

    bundled = sorted(pathlib.Path(ensurepip.__file__).parent.glob("_bundled/pip-*.whl"))
    folder = tmp_path_factory.mktemp("device") / "venv"
    venv.create(folder, with_pip=not bundled)
    env = {**os.environ, **OFFLINE}
    if bundled:
        env["PYTHONPATH"] = str(bundled[-1])
    return folder / "bin" / "python", env


def _device(fresh_venv, folder, store, *extra):
    python, env = fresh_venv
    command = [str(python), "-m", "experiments.gpu.kit", "device", str(folder)]
    command += [f"--store={store}", *(extra or ["--no_check"])]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)


def test_the_device_command_installs_the_rebuilt_wheel_offline_into_a_fresh_venv(
    fresh_venv, packed, tmp_path
):
    manifest, pieces, _ = packed
    store = tmp_path / "gpukit"
    outputs = [_device(fresh_venv, pieces / bundle.piece_folder(i), store) for i in range(3)]
    assert all(o.returncode == 0 for o in outputs), outputs[-1].stderr
    assert (
        "missing: piece-02.bin" not in outputs[2].stdout
        and "kept piece-03.bin" in outputs[2].stdout
    )
    last = len(manifest["pieces"]) - 1
    for i in range(3, last):
        _device(fresh_venv, pieces / bundle.piece_folder(i), store)
    out, work = tmp_path / "OUT", tmp_path / "work"
    # The completing call installs, then starts the check (here with no step: its wiring).
    check = f"--steps=none --work={work}"
    done = _device(
        fresh_venv,
        pieces / bundle.piece_folder(last),
        store,
        f"--out={out}",
        f"--check_args={check}",
    )
    assert done.returncode == 0, done.stderr
    assert "all pieces here" in done.stdout and "installed into" in done.stdout
    records = [json.loads(line) for line in (out / "check.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == "done" and 0 < records[-1]["seconds_left"] <= 470
    assert (store / "files" / "breastmnist.npz").read_bytes() == (
        tmp_path / "breastmnist.npz"
    ).read_bytes()
    probe = subprocess.run(
        [str(fresh_venv[0]), "-c", "import kitprobe; print(kitprobe.VALUE, kitprobe.__file__)"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(store / "site")},
    )
    assert probe.stdout.split()[0] == "42" and str(store / "site") in probe.stdout


def test_the_device_command_refuses_a_damaged_piece_in_one_line(fresh_venv, packed, tmp_path):
    manifest, pieces, _ = packed
    piece = pieces / "02" / bundle.piece_name(1)
    piece.write_bytes(b"x" + piece.read_bytes()[1:])
    result = _device(fresh_venv, pieces / "02", tmp_path / "gpukit")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "kit: Piece piece-02.bin is damaged (its SHA-256 differs from the manifest's): send "
        "that piece again."
    )


def test_plan_carries_one_piece_per_call_and_gives_the_last_the_check_time(packed):
    manifest, _, _ = packed
    calls = kit.plan_calls(manifest)
    assert len(calls) == len(manifest["pieces"])
    for i, call in enumerate(calls, 1):
        assert call["carry"] == [f".gpukit/pieces/{i:02d}"]
        assert f"kit device .gpukit/pieces/{i:02d} --out=$OUT" in call["command"]
    assert [c["timeout_s"] for c in calls[:-1]] == [kit.TRANSFER_TIMEOUT_S] * (len(calls) - 1)
    assert calls[-1]["timeout_s"] == kit.LAST_TIMEOUT_S <= 600
    assert all(len(c["command"]) <= 2000 for c in calls)  # the device tool's limit


def test_a_piece_fits_one_call_beside_the_working_tree():
    tree = kit.tree_bytes()
    size = kit.piece_limit(tree)
    assert size <= 60 * kit.MIB and tree + size < kit.CARRY_LIMIT
    assert kit.piece_limit(1 * kit.MIB) == 60 * kit.MIB
    assert kit.piece_limit(30 * kit.MIB) == 32 * kit.MIB  # 64 - 30 - the 2 MiB margin
    with pytest.raises(SystemExit, match="no room for a piece"):
        kit.piece_limit(63 * kit.MIB)


def test_wheels_follow_the_lock_and_tensorflow_travels_as_its_cpu_build():
    versions = kit.lock_versions()
    wanted = kit.requirements(versions)
    assert f"tensorflow-cpu=={versions['tensorflow']}" in wanted
    assert f"keras=={versions['keras']}" in wanted
    assert not any(r.startswith("tensorflow==") for r in wanted)
    command = kit.pip_download_command(wanted[0], pathlib.Path("/x"))
    assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
    assert command[command.index("--python-version") + 1] == "3.12"
    assert "manylinux_2_27_x86_64" in command and command[-1] == wanted[0]
    with pytest.raises(SystemExit, match="uv.lock pins no"):
        kit.requirements({"keras": "3"})


def test_two_files_of_one_name_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "same.whl").write_bytes(b"x")
    files = [(tmp_path / "a" / "same.whl", "wheel"), (tmp_path / "b" / "same.whl", "wheel")]
    with pytest.raises(bundle.BundleError, match="Two files share the name same.whl"):
        bundle.pack(files, tmp_path / "out", 10)


def test_manifest_of_another_format_is_refused(tmp_path):
    (tmp_path / bundle.MANIFEST).write_text(json.dumps({"format": 99}))
    with pytest.raises(bundle.BundleError, match="not a format-1 manifest: pack the pieces again"):
        bundle.read_manifest(tmp_path)


def make_check(tmp_path, *extra):
    args = ["--data=/d", f"--out={tmp_path / 'out'}", f"--work={tmp_path / 'work'}", *extra]
    return check.Check(check.build_parser().parse_args(args))


def test_the_check_trains_the_recipe_on_the_carried_data_and_lets_auto_pick_the_backend(tmp_path):
    command = make_check(tmp_path).train_command(tmp_path / "run")
    assert command[1:3] == ["-m", "tlmed_keras.train"]
    flags = command[3:]
    assert flags[0] == f"--flagfile={check.RECIPE}"  # first: the flags after it win
    assert {"--data=breastmnist", "--data_dir=/d", "--seed=0"} <= set(flags)
    assert f"--weights=/d/{check.WEIGHTS}" in flags and flags[-1] == f"--workdir={tmp_path / 'run'}"
    assert check.WEIGHTS in kit.CHECK_DATA[1]  # the kit carries what the check reads
    recipe = (ROOT / check.RECIPE).read_text().splitlines()
    assert "--backend=auto" in recipe and not any(f.startswith("--backend") for f in flags)
    tiny = make_check(tmp_path, "--tiny").train_command(tmp_path / "run", "--finetune_epochs=3")
    assert tiny[3] == f"--flagfile={check.SMOKE}" and tiny[-1] == "--finetune_epochs=3"
    assert not any(f.startswith("--weights") for f in tiny)


def test_the_check_benches_both_models_in_both_precisions_pipeline_fed(tmp_path):
    rows = {(model, size, bf16) for model, size, bf16 in check.BENCH}
    assert rows == {
        (m, s, b)
        for m, s in (("resnet50", 224), ("mobilenet_v2_torchvision", 112))
        for b in (True, False)
    }
    assert check.BENCH[0] == ("resnet50", 224, True)  # the goal's row runs first
    full, tiny = make_check(tmp_path), make_check(tmp_path, "--tiny")
    command = check.bench_command(full, "resnet50", 224, True)
    assert command[1:4] == ["-m", "tlmed_keras.bench", "--target=train"]
    assert {"--model=resnet50", "--image_size=224", "--batch_size=128"} <= set(command)
    assert "--train_mixed_precision" in command
    assert "--train_mixed_precision" not in check.bench_command(full, "resnet50", 224, False)
    assert "--image_size=32" in check.bench_command(tiny, "resnet50", 224, False)


def test_epoch_times_estimate_each_phase_compile_time(tmp_path):
    history = tmp_path / "history.csv"
    rows = ["epoch,phase,seconds", "1,head,9", "2,head,2", "3,head,2.5", "4,finetune,20"]
    history.write_text("\n".join([*rows, "5,finetune,3", "6,finetune,4"]) + "\n")
    times = check.epoch_times(history)
    assert times["epochs"] == 6 and times["head_epoch_s"] == [9.0, 2.0, 2.5]
    assert times["head_compile_s"] == 6.75 and times["finetune_compile_s"] == 16.5


def test_bench_lines_are_read_from_the_bench_output():
    output = (
        "compile_s=12.30 (first step: tracing + compilation + the step)\n"
        "no_pipeline: images_per_s=5000.0 step_ms=25.6\n"
        "pipeline:    images_per_s=4600.5 step_ms=27.8 load_after=1.0\n"
    )
    found = {
        k: float(m.group(1)) for k, p in check.BENCH_LINES.items() if (m := re.search(p, output))
    }
    assert found == {
        "compile_s": 12.3,
        "step_only_images_per_s": 5000.0,
        "pipeline_images_per_s": 4600.5,
    }
