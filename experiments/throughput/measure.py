"""Training throughput of the study's backbones: one ``tlmed_keras.bench --target=train``
process per model, tabulated as Markdown with the machine's load.

    python -m experiments.throughput.measure --image_size=64 --batch_size=16 \\
        --out=experiments/throughput/README.md

Each model runs in its own process (Keras fixes its backend at import, XLA caches compiled
steps per process), one after the other. The table gives images/s of the compiled training
step fed from memory and fed by the real pipeline, the first step's time (tracing and
compilation) and the 1-minute load average before and after, since on a shared machine the
rates depend on the neighbours.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import re
import subprocess
import sys
import time

from experiments import table3

REPO = pathlib.Path(__file__).resolve().parents[2]
MODELS = table3.MODELS  # the study's Table 3 backbones
MIN_SIZE = table3.CPU_INPUT  # Inception V3: 75 px, its smallest input
PATTERNS = {
    "compile_s": r"compile_s=([\d.]+)",
    "memory": r"^no_pipeline: images_per_s=([\d.]+)",
    "memory_ms": r"^no_pipeline: images_per_s=[\d.]+ step_ms=([\d.]+)",
    # The bench's headline (last line) is the pipeline-fed rate.
    "pipeline": r"^train_images_per_s=([\d.]+)",
    "pipeline_ms": r"^pipeline: +images_per_s=[\d.]+ step_ms=([\d.]+)",
    "params": r"trainable_params=(\d+)",
    "backend": r"backend=(\w+) ",
}


def uptime() -> str:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(model: str, args) -> dict:
    size = max(args.image_size, MIN_SIZE.get(model, 0))
    argv = [
        sys.executable, "-m", "tlmed_keras.bench", "--target=train", f"--model={model}",
        f"--image_size={size}", f"--batch_size={args.batch_size}", f"--steps={args.steps}",
        f"--warmup_steps={args.warmup_steps}", f"--num_images={args.num_images}",
        f"--backend={args.backend}",
    ]  # fmt: skip
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    row = {
        "model": model,
        "size": size,
        "wall_s": time.perf_counter() - start,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "rc": proc.returncode,
    }
    for key, pattern in PATTERNS.items():
        found = re.search(pattern, proc.stdout, re.MULTILINE)
        row[key] = found.group(1) if found else ""
    if proc.returncode:
        row["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:200]
    print(f"{model}: {row}", flush=True)
    return row


def markdown(rows: list[dict], args, before: str, after: str) -> str:
    lines = [
        "# Training throughput of the study's backbones (CPU)",
        "",
        f"`python -m experiments.throughput.measure --image_size={args.image_size} "
        f"--batch_size={args.batch_size} --steps={args.steps} "
        f"--warmup_steps={args.warmup_steps}` (each model: `python -m tlmed_keras.bench "
        "--target=train ...`), full backbone trainable, random weights, synthetic "
        "BloodMNIST-shaped 28 px uint8 images resized by the Preprocess layer.",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.machine()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}.",
        f"- `uptime` before: {before}",
        f"- `uptime` after: {after}",
        "",
        "| model | input px | trainable params | first step (compile) s | images/s from memory "
        "| step ms | images/s with pipeline | load before → after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["rc"]:
            lines.append(
                f"| {r['model']} | {r['size']} | failed: {r.get('error', '')} | | | | "
                f"| {r['load_before']:.1f} → {r['load_after']:.1f} |"
            )
            continue
        params = f"{int(r['params']) / 1e6:.1f} M" if r["params"] else ""
        lines.append(
            f"| {r['model']} | {r['size']} | {params} | {r['compile_s']} | {r['memory']} "
            f"| {r['memory_ms']} | {r['pipeline']} "
            f"| {r['load_before']:.1f} → {r['load_after']:.1f} |"
        )
    lines += [
        "",
        "Images/s is wall-clock: on a shared machine it falls with the load average shown; "
        "compare models measured at similar load only, and rerun on an idle machine for "
        "numbers to quote.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup_steps", type=int, default=2)
    parser.add_argument("--num_images", type=int, default=256)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    before = uptime()
    rows = [measure(m, args) for m in args.models.split(",") if m]
    text = markdown(rows, args, before, uptime())
    if args.out:
        pathlib.Path(args.out).write_text(text)
    print(text)
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
