"""The first end-to-end check of the trainer on a GPU, kept under 8 minutes.

    python -m experiments.gpu.check --data=DIR --out=$OUT          # on the GPU machine (kit)
    python -m experiments.gpu.check --data=DIR --out=OUT --tiny    # dry run on a CPU

``DIR`` holds ``breastmnist.npz`` and the recipe's ``mobilenet_v2-b0353104.pth`` (the kit
carries both). In order, each step a subprocess with its own share of the time left:

0. env: package versions; the backend ``auto`` picks; what TensorFlow sees after the
   project's start-up (``runtime.setup``) and whether it was built with CUDA; JAX's devices.
1. recipe: the BreastMNIST recipe (flags/recipes/mobilenet_v2_torchvision.cfg), seed 0, real
   pipeline; wall time, time per epoch, compile time (first epoch of a phase minus the
   phase's median epoch), test metrics.
2. export: the recipe's run as a SavedModel, then ``saved_model_cli show --all`` on it.
3. bench: ``bench --target=train``, pipeline-fed and step-only: ResNet-50 @ 224 bfloat16
   (the goal's row) and MobileNetV2 @ 112 float32 (the recipe's);
4. resume: the recipe again in another folder, stopped by SIGTERM in the middle of the
   fine-tuning phase, rerun to the end; epochs in history.csv and test metrics vs step 1;
5. bench: ResNet-50 @ 224 float32 and MobileNetV2 @ 112 bfloat16. A bench row is skipped,
   and says so, when the time left cannot hold it.

Writes at most 8 files into ``--out``: check.log (all output), check.jsonl (one line per
step), env.json, recipe_metrics.json, recipe_history.csv, resume_history.csv,
saved_model_cli.txt. ``--tiny`` shrinks every step (smoke flags, 32 px, few steps) so the
whole logic runs on a CPU in a few minutes before device time is spent on it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
RECIPE = "flags/recipes/mobilenet_v2_torchvision.cfg"
SMOKE = "flags/cpu/smoke.cfg"
WEIGHTS = "mobilenet_v2-b0353104.pth"
BUDGET_S = 470  # the kit's last call allows 560 s: install first, the rest for safety
# (model, input px, bfloat16): the reference row (ResNet-50 bf16) first.
BENCH = (
    ("resnet50", 224, True),
    ("mobilenet_v2_torchvision", 112, False),
    ("resnet50", 224, False),
    ("mobilenet_v2_torchvision", 112, True),
)
TINY_SLOWDOWN = 8  # --tiny runs on a shared 2-core CPU: its steps get 8x the GPU's caps
BENCH_MIN_S = 45  # a bench run is not started with less time left than this


ENV_SCRIPT = """
import json, sys
from tlmed_keras import runtime
backend = runtime.setup("auto")
import tensorflow as tf, keras, jax, numpy, ml_dtypes, google.protobuf as pb
print(json.dumps({
    "python": sys.version.split()[0], "backend_auto": backend,
    "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                 "jax": jax.__version__, "numpy": numpy.__version__,
                 "ml_dtypes": ml_dtypes.__version__, "protobuf": pb.__version__},
    "tf_built_with_cuda": tf.test.is_built_with_cuda(),
    "tf_physical_devices": [d.name for d in tf.config.list_physical_devices()],
    "tf_visible_devices": [d.name for d in tf.config.get_visible_devices()],
    "jax_devices": [str(d) for d in jax.devices()],
}))
"""


class Check:
    """Runs the steps under one time budget and writes what they found into ``out``."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = pathlib.Path(args.out)
        self.work = pathlib.Path(args.work)
        self.deadline = time.monotonic() + args.budget_s
        self.out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.log_path = self.out / "check.log"

    def write_log(self, text: str) -> None:
        with open(self.log_path, "a") as log:
            log.write(text)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def cap(self, seconds: float) -> float:
        """A step's time limit: its own cap (scaled for a slow CPU's dry run) or what is left."""
        return min(seconds * (TINY_SLOWDOWN if self.args.tiny else 1), self.left())

    def record(self, step: str, **values) -> None:
        line = json.dumps({"step": step, **values})
        print(line, flush=True)
        with open(self.out / "check.jsonl", "a") as f:
            f.write(line + "\n")

    def run(self, command: list[str], timeout: float) -> tuple[int, str, float]:
        """Runs ``command`` in the repository root; returns (exit code, output, seconds).
        Exit code -9 when it outran ``timeout`` (it is killed)."""
        self.write_log(f"\n$ {' '.join(command)}\n")
        start = time.perf_counter()
        try:
            done = subprocess.run(
                command, cwd=ROOT, capture_output=True, text=True, timeout=max(timeout, 1)
            )
            code, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as e:
            code, output = -9, _text(e.stdout) + _text(e.stderr) + "\n(timed out)\n"
        seconds = time.perf_counter() - start
        self.write_log(output)
        return code, output, seconds

    def python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    def train_command(self, workdir: pathlib.Path, *extra: str) -> list[str]:
        data = pathlib.Path(self.args.data)
        if self.args.tiny:
            flags = [f"--flagfile={SMOKE}", f"--data_dir={data}"]
        else:
            flags = [f"--flagfile={RECIPE}", "--data=breastmnist", f"--data_dir={data}"]
            flags.append(f"--weights={data / WEIGHTS}")
        return self.python(
            "-m", "tlmed_keras.train", *flags, "--seed=0", f"--workdir={workdir}", *extra
        )


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def step_env(check: Check) -> dict:
    code, output, seconds = check.run(check.python("-c", ENV_SCRIPT), check.cap(120))
    found = _last_json(output) or {}
    (check.out / "env.json").write_text(json.dumps(found, indent=1) + "\n")
    check.record("env", ok=code == 0 and bool(found), seconds=round(seconds, 1), **found)
    return found


def _last_json(output: str) -> dict | None:
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def epoch_times(history: pathlib.Path) -> dict:
    """Seconds per epoch by phase, and each phase's compile time estimate (its first epoch
    minus the median of its other epochs; None for a one-epoch phase)."""
    import csv

    with open(history) as f:
        rows = list(csv.DictReader(f))
    phases: dict[str, list[float]] = {}
    for row in rows:
        phases.setdefault(row["phase"], []).append(float(row["seconds"]))
    summary = {"epochs": len(rows)}
    for phase, seconds in phases.items():
        rest = seconds[1:]
        summary[f"{phase}_epoch_s"] = [round(s, 2) for s in seconds]
        summary[f"{phase}_compile_s"] = (
            round(seconds[0] - statistics.median(rest), 2) if rest else None
        )
    return summary


def step_recipe(check: Check) -> pathlib.Path | None:
    workdir = check.work / "recipe"
    code, output, seconds = check.run(check.train_command(workdir), check.cap(240))
    metrics_file = workdir / "metrics.json"
    if code != 0 or not metrics_file.is_file():
        check.record("recipe", ok=False, code=code, seconds=round(seconds, 1), tail=output[-800:])
        return None
    metrics = json.loads(metrics_file.read_text())
    shutil.copyfile(metrics_file, check.out / "recipe_metrics.json")
    shutil.copyfile(workdir / "history.csv", check.out / "recipe_history.csv")
    check.record(
        "recipe",
        ok=True,
        wall_s=round(seconds, 1),
        backend=metrics.get("backend"),
        test=metrics.get("test"),
        val=metrics.get("val"),
        timings=metrics.get("timings"),
        **epoch_times(workdir / "history.csv"),
    )
    return workdir


def step_export(check: Check, workdir: pathlib.Path) -> None:
    serving = check.work / "serving"
    command = check.python("-m", "tlmed_keras.export", f"--workdir={workdir}")
    code, output, seconds = check.run([*command, f"--export_dir={serving}"], check.cap(150))
    versions = sorted(serving.glob("*/[0-9]*"))
    if code != 0 or not versions:
        check.record("export", ok=False, code=code, seconds=round(seconds, 1), tail=output[-800:])
        return
    cli = ["-m", "tensorflow.python.tools.saved_model_cli", "show", "--all", "--dir"]
    cli_code, shown, _ = check.run(check.python(*cli, str(versions[-1])), check.cap(60))
    (check.out / "saved_model_cli.txt").write_text(shown)
    check.record(
        "export",
        ok=cli_code == 0 and "serving_default" in shown,
        seconds=round(seconds, 1),
        version=str(versions[-1].relative_to(check.work)),
        signature_lines=[ln.strip() for ln in shown.splitlines() if "name:" in ln][:6],
    )


def stop_mid_phase(
    check: Check, command: list[str], workdir: pathlib.Path, after_epoch: int, timeout: float
) -> dict:
    """Starts ``command`` (training in ``workdir``) and sends it SIGTERM once its checkpoint
    records ``after_epoch`` epochs, so it dies inside the next one. Returns what happened."""
    state = workdir / "ckpt" / "state.json"
    start = time.monotonic()
    with open(check.out / "check.log", "a") as log:
        log.write(f"\n$ {' '.join(command)}  (SIGTERM after epoch {after_epoch})\n")
        log.flush()
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        epoch = 0
        while process.poll() is None and time.monotonic() - start < timeout:
            epoch = _state_epoch(state)
            if epoch >= after_epoch:
                process.send_signal(signal.SIGTERM)
                break
            time.sleep(0.1)
        else:
            process.kill()
        code = process.wait()
    return {
        "stopped_after_epoch": epoch,
        "exit": code,
        "seconds": round(time.monotonic() - start, 1),
    }


def _state_epoch(path: pathlib.Path) -> int:
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def step_resume(check: Check, reference: pathlib.Path | None) -> None:
    workdir = check.work / "resume"
    extra = ["--finetune_epochs=3"] if check.args.tiny else []
    after = 2 if check.args.tiny else 5  # the recipe: 3 head epochs, then 10 fine-tuning
    command = check.train_command(workdir, *extra)
    stopped = stop_mid_phase(check, command, workdir, after, check.cap(200))
    code, output, seconds = check.run(command, check.cap(240))
    history = workdir / "history.csv"
    result = {"ok": False, "first": stopped, "rerun_exit": code, "rerun_s": round(seconds, 1)}
    if code == 0 and history.is_file():
        shutil.copyfile(history, check.out / "resume_history.csv")
        epochs = [int(row.split(",", 1)[0]) for row in history.read_text().splitlines()[1:]]
        metrics = json.loads((workdir / "metrics.json").read_text())
        result.update(
            ok=epochs == list(range(1, len(epochs) + 1)) and "Resuming" in output,
            epochs=len(epochs),
            resumed_line=next((ln for ln in output.splitlines() if "Resuming" in ln), None),
            test=metrics.get("test"),
        )
        if reference is not None and not extra:
            base = json.loads((reference / "metrics.json").read_text())["test"]
            result["test_minus_recipe"] = {k: round(metrics["test"][k] - base[k], 4) for k in base}
    check.record("resume", **result)


BENCH_LINES = {
    "compile_s": r"compile_s=([\d.]+)",
    "step_only_images_per_s": r"(?m)^no_pipeline: images_per_s=([\d.]+)",
    "pipeline_images_per_s": r"(?m)^pipeline: +images_per_s=([\d.]+)",
}


def bench_command(check: Check, model: str, size: int, bf16: bool) -> list[str]:
    steps = ["--steps=2", "--warmup_steps=1", "--batch_size=8", "--num_images=64"]
    if not check.args.tiny:
        steps = ["--steps=40", "--warmup_steps=5", "--batch_size=128", "--num_images=4096"]
    command = ["-m", "tlmed_keras.bench", "--target=train", f"--model={model}"]
    command += [f"--image_size={32 if check.args.tiny else size}", *steps]
    if bf16:
        command.append("--train_mixed_precision")
    return check.python(*command)


def step_bench(check: Check, rows: tuple[tuple[str, int, bool], ...]) -> None:
    for model, size, bf16 in rows:
        name = f"bench {model}@{size} {'bfloat16' if bf16 else 'float32'}"
        if check.left() < BENCH_MIN_S:
            check.record(name, ok=False, skipped=f"{check.left():.0f} s left")
            continue
        code, output, seconds = check.run(bench_command(check, model, size, bf16), check.left())
        found = {
            k: float(m.group(1)) for k, p in BENCH_LINES.items() if (m := re.search(p, output))
        }
        if "step_only_images_per_s" in found and "pipeline_images_per_s" in found:
            found["pipeline_over_step"] = round(
                found["pipeline_images_per_s"] / found["step_only_images_per_s"], 3
            )
        check.record(name, ok=code == 0 and len(found) >= 3, seconds=round(seconds, 1), **found)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.gpu.check", description=__doc__)
    parser.add_argument("--data", required=True, help="folder with breastmnist.npz (+ weights)")
    parser.add_argument("--out", default="gpukit_out", help="where the (<= 8) files go")
    parser.add_argument("--work", default="/tmp/gpukit_check", help="run folders (emptied)")
    parser.add_argument("--budget_s", type=float, default=BUDGET_S, help="all steps together")
    parser.add_argument("--tiny", action="store_true", help="CPU dry run: smoke-sized steps")
    parser.add_argument("--steps", default="env,recipe,export,resume,bench", help="which")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(pathlib.Path(args.work) / "jax_cache"))
    check = Check(args)
    steps = args.steps.split(",")
    if "env" in steps:
        step_env(check)
    recipe = step_recipe(check) if "recipe" in steps else None
    if recipe is not None and "export" in steps:
        step_export(check, recipe)
    # The two bench rows only a GPU can give first, then resume (tested on CPUs already),
    # then the other two rows with what is left.
    if "bench" in steps:
        step_bench(check, BENCH[:2])
    if "resume" in steps:
        step_resume(check, recipe)
    if "bench" in steps:
        step_bench(check, BENCH[2:])
    check.record("done", seconds_left=round(check.left(), 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
