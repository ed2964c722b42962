"""The GPU kit: carries the wheels the trainer needs to the lent GPU machine and runs the check.

The lent machine has JAX (CUDA) but no TensorFlow, Keras or tf.data, and reaches no registry;
each device call carries at most 64 MiB of ignored files with the working tree. So, HERE::

    python -m experiments.gpu.kit fetch      # pip-downloads the missing wheels (cp312 x86-64)
    python -m experiments.gpu.kit pack       # cuts wheels + check data into pieces <= 60 MiB
    python -m experiments.gpu.kit plan       # prints the device calls to make, in order

and THERE, one call per piece while the machine stays warm (``plan`` prints them)::

    python3 -m experiments.gpu.kit device .gpukit/pieces/NN --out=$OUT

Each device call checks its piece by SHA-256 and keeps it in ``/tmp/gpukit`` (it survives
between calls while the machine stays warm; a cold restart is detected and the pieces to send
again are named). The call that completes the set rebuilds every file, checks each by SHA-256,
installs the wheels with ``pip install --no-index --no-deps --target``, and runs
``experiments.gpu.check``. Standard library only: it runs there before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

if __package__ in (None, ""):  # run as a file: make ``experiments`` importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from experiments.gpu import bundle  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
KIT_DIR = ROOT / ".gpukit"  # ignored (.gitignore): wheels/ and pieces/
STORE = pathlib.Path("/tmp/gpukit")  # on the device: survives between calls while warm
MIB = 1 << 20
CARRY_LIMIT = 64 * MIB  # working tree + carried paths, per device call
MAX_PIECE = 60 * MIB
SHARED = ROOT.parent / "shared"
# What the check reads besides the code: BreastMNIST (28 px) and the recipe's ImageNet weights.
CHECK_DATA = (
    "data/medmnist/breastmnist.npz",
    "weights/torchvision/mobilenet_v2-b0353104.pth",
)
# The lock's packages that the trainer, bench and export import and the GPU image lacks
# (its package list: the device library's KINDS.md). Found by listing the distributions in
# sys.modules after a smoke train, an export and a bench run. TensorFlow travels as its CPU
# build (tensorflow-cpu, 274 MB against 572 MB): there it only serves tf.data, TensorBoard and
# SavedModel, and must not see the GPU anyway. protobuf and tensorboard are on the image in
# unknown versions: the lock's travel, as TensorFlow's generated code needs a recent protobuf.
DEVICE_LACKS = (
    "tensorflow",
    "keras",
    "namex",
    "optree",
    "termcolor",
    "astunparse",
    "gast",
    "google-pasta",
    "googleapis-common-protos",
    "protobuf",
    "tensorboard",
)
RENAMED = {"tensorflow": "tensorflow-cpu"}  # same version, same import name
# pip matches manylinux tags exactly: the ones the GPU image (glibc 2.39, x86-64) accepts.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64")
PLATFORMS += ("manylinux2014_x86_64", "manylinux1_x86_64")
DEVICE_PYTHON = "3.12"


def lock_versions(lock: pathlib.Path = ROOT / "uv.lock") -> dict[str, str]:
    """``{name: version}`` of every package pinned in uv.lock."""
    import tomllib

    packages = tomllib.loads(lock.read_text()).get("package", [])
    return {p["name"]: p["version"] for p in packages if "version" in p}


def requirements(versions: dict[str, str]) -> list[str]:
    """``NAME==VERSION`` of the wheels to carry, at the lock's versions."""
    missing = [name for name in DEVICE_LACKS if name not in versions]
    if missing:
        raise SystemExit(f"kit: uv.lock pins no {', '.join(missing)}: update DEVICE_LACKS.")
    return [f"{RENAMED.get(name, name)}=={versions[name]}" for name in DEVICE_LACKS]


def pip_download_command(requirement: str, dest: pathlib.Path) -> list[str]:
    """The pip command that downloads ``requirement``'s wheel for the device (no deps)."""
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
    command += ["--only-binary=:all:", "--python-version", DEVICE_PYTHON, "--implementation"]
    command += ["cp", "-d", str(dest)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    return [*command, requirement]


def fetch(args: argparse.Namespace) -> None:
    """Downloads the wheels into .gpukit/wheels (those already there are kept)."""
    dest = KIT_DIR / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    for requirement in requirements(lock_versions()):
        print(f"kit: {requirement}", flush=True)
        subprocess.run(pip_download_command(requirement, dest), check=True)
    total = sum(f.stat().st_size for f in dest.glob("*.whl"))
    print(f"kit: {len(list(dest.glob('*.whl')))} wheels in {dest}, {total / MIB:.1f} MiB")


def tree_bytes(root: pathlib.Path = ROOT) -> int:
    """Bytes of what every device call sends anyway: tracked and untracked-not-ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    paths = [root / os.fsdecode(name) for name in listed if name]
    return sum(path.stat().st_size for path in paths if path.is_file())


def piece_limit(tree: int, margin: int = 2 * MIB) -> int:
    """The largest piece that fits one call beside the tree (and the manifest), at most 60 MiB."""
    room = CARRY_LIMIT - tree - margin
    if room < MIB:
        raise SystemExit(f"kit: the working tree is {tree / MIB:.1f} MiB: no room for a piece.")
    return min(MAX_PIECE, room)


def bundle_files(wheels: pathlib.Path, shared: pathlib.Path) -> list[tuple[pathlib.Path, str]]:
    """The wheels (largest first) then the check's data files, as ``(path, kind)``."""
    found = sorted(wheels.glob("*.whl"), key=lambda p: (-p.stat().st_size, p.name))
    if not found:
        raise SystemExit(f"kit: no wheels in {wheels}: run `python -m experiments.gpu.kit fetch`.")
    data = [shared / name for name in CHECK_DATA]
    absent = [str(p) for p in data if not p.is_file()]
    if absent:
        raise SystemExit(f"kit: {', '.join(absent)} not found: pass --shared=DIR (../shared).")
    return [(p, "wheel") for p in found] + [(p, "data") for p in data]


def pack_command(args: argparse.Namespace) -> None:
    tree = tree_bytes()
    size = int(args.piece_mib * MIB) if args.piece_mib else piece_limit(tree)
    files = bundle_files(KIT_DIR / "wheels", pathlib.Path(args.shared))
    manifest = bundle.pack(files, KIT_DIR / "pieces", size)
    print(
        f"kit: {len(manifest['files'])} files, {manifest['total_bytes'] / MIB:.1f} MiB, in "
        f"{len(manifest['pieces'])} pieces of <= {size / MIB:.1f} MiB under "
        f"{KIT_DIR / 'pieces'}; the working tree sends {tree / MIB:.2f} MiB with each."
    )
    print_plan(manifest)


# Seconds per device call: a transfer call copies one piece; the last one also installs (~30 s)
# and runs the check (experiments.gpu.check keeps itself under CHECK_BUDGET_S).
TRANSFER_TIMEOUT_S = 120
LAST_TIMEOUT_S = 560
CALL_MARGIN_S = 30


def device_command(folder: str) -> str:
    return f"PYTHONUNBUFFERED=1 python3 -m experiments.gpu.kit device {folder} --out=$OUT"


def plan_calls(manifest: dict) -> list[dict]:
    """The device tool's ``run`` arguments, one call per piece, the check in the last."""
    count = len(manifest["pieces"])
    return [
        {
            "command": device_command(f".gpukit/pieces/{bundle.piece_folder(i)}"),
            "carry": [f".gpukit/pieces/{bundle.piece_folder(i)}"],
            "timeout_s": LAST_TIMEOUT_S if i == count - 1 else TRANSFER_TIMEOUT_S,
        }
        for i in range(count)
    ]


def print_plan(manifest: dict) -> None:
    print("kit: device calls, in order, each as soon as the last returns (warm for ~30 s):")
    for i, call in enumerate(plan_calls(manifest), 1):
        print(f"  {i}. run {json.dumps(call)}")


def plan_command(args: argparse.Namespace) -> None:
    print_plan(bundle.read_manifest(KIT_DIR / "pieces"))


# --- on the device ---------------------------------------------------------------------


def boot_id() -> str:
    try:
        return pathlib.Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def receive(piece_dir: pathlib.Path, store: pathlib.Path) -> dict:
    """Checks the carried piece and keeps it in ``store``. Returns what the store holds:
    ``{"piece", "missing", "cold"}``; ``cold``: earlier pieces were lost (fresh machine)."""
    manifest = bundle.read_manifest(piece_dir)
    carried = sorted(piece_dir.glob("piece-*.bin"))
    if len(carried) != 1:
        raise bundle.BundleError(f"{piece_dir} holds {len(carried)} pieces: carry one folder.")
    piece = carried[0]
    bundle.check_piece(piece, manifest)
    ident = bundle.bundle_id(manifest)
    stamp = store / "bundle_id"
    fresh = not stamp.is_file() or stamp.read_text() != ident
    if fresh:  # a new machine, or pieces of another pack: start the set again
        import shutil

        shutil.rmtree(store, ignore_errors=True)
        store.mkdir(parents=True)
        stamp.write_text(ident)
        (store / bundle.MANIFEST).write_text(json.dumps(manifest))
    (store / "pieces").mkdir(exist_ok=True)
    os.replace(_copy(piece, store / "pieces" / f".{piece.name}.tmp"), store / "pieces" / piece.name)
    index = [p["name"] for p in manifest["pieces"]].index(piece.name)
    with open(store / "calls.log", "a") as log:
        log.write(f"{time.strftime('%H:%M:%S')} {piece.name} boot {boot_id()}\n")
    missing = bundle.missing_pieces(store / "pieces", manifest)
    return {"piece": piece.name, "missing": missing, "cold": fresh and index > 0}


def _copy(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    import shutil

    shutil.copyfile(source, target)
    return target


def install(store: pathlib.Path) -> pathlib.Path:
    """Rebuilds the files from the pieces (SHA-256 checked) and installs the wheels into
    ``store/site`` once; returns that folder."""
    site, done = store / "site", store / "installed"
    if done.is_file():
        return site
    manifest = json.loads((store / bundle.MANIFEST).read_text())
    entries = bundle.reassemble(store / "pieces", manifest, store / "files")
    wheels = [str(store / "files" / e["name"]) for e in entries if e["kind"] == "wheel"]
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    command += ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site), *wheels]
    subprocess.run(command, check=True)
    done.write_text(f"{len(wheels)} wheels\n")
    return site


def device(args: argparse.Namespace) -> None:
    """One device call: keep the piece; when the set is complete, install and run the check."""
    store = pathlib.Path(args.store)
    start = time.monotonic()
    status = receive(pathlib.Path(args.piece_dir), store)
    if status["cold"]:
        print(
            "kit: COLD RESTART: this machine held none of the earlier pieces (it was given back "
            "and started fresh); send the missing pieces again, in any order."
        )
    if status["missing"]:
        print(f"kit: kept {status['piece']}; missing: {' '.join(status['missing'])}")
        return
    print(f"kit: kept {status['piece']}; all pieces here: rebuilding and installing", flush=True)
    site = install(store)
    print(f"kit: installed into {site} in {time.monotonic() - start:.0f} s", flush=True)
    if args.no_check:
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    command = [sys.executable, "-m", "experiments.gpu.check", f"--data={store / 'files'}"]
    # What the call's time limit leaves after the install, less a margin for the files' return.
    budget = min(args.check_budget_s, LAST_TIMEOUT_S - CALL_MARGIN_S - (time.monotonic() - start))
    command += [f"--budget_s={budget:.0f}", *args.check_args.split()]
    if args.out:
        command.append(f"--out={args.out}")
    sys.exit(subprocess.run(command, env=env, cwd=ROOT).returncode)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.gpu.kit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the wheels (here)").set_defaults(run=fetch)
    pack = sub.add_parser("pack", help="cut wheels + data into pieces (here)")
    pack.add_argument("--piece_mib", type=float, default=0, help="default: what fits a call")
    pack.add_argument("--shared", default=str(SHARED), help="the shared folder (../shared)")
    pack.set_defaults(run=pack_command)
    sub.add_parser("plan", help="print the device calls (here)").set_defaults(run=plan_command)
    dev = sub.add_parser("device", help="keep a piece; install and check when complete (there)")
    dev.add_argument("piece_dir", help="the carried piece folder, e.g. .gpukit/pieces/01")
    dev.add_argument("--store", default=str(STORE), help="where pieces accumulate")
    dev.add_argument("--out", default=None, help="where the check writes its files ($OUT)")
    dev.add_argument("--no_check", action="store_true", help="install only")
    dev.add_argument("--check_budget_s", type=float, default=470, help="the check's time, at most")
    dev.add_argument("--check_args", default="", help="more check flags, e.g. --steps=env,recipe")
    dev.set_defaults(run=device)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        args.run(args)
    except bundle.BundleError as e:
        sys.exit(f"kit: {e}")


if __name__ == "__main__":
    main()
