#!/usr/bin/env bash
# Regenerates the measured numbers the README quotes, each file stamped with its date, the
# machine and its load (a shared machine's neighbours change wall-clock rates):
#
#   bash scripts/readme_numbers.sh             # input pipeline bench -> experiments/numbers/pipeline.txt (~1 min)
#   bash scripts/readme_numbers.sh --training  # also the CPU training benchmarks (~30 min; run it
#                                              # on an idle machine; compare_torch needs PyTorch CPU)
#
# The README's Speed section cites these files and experiments/cpu_speed/logs/,
# experiments/throughput/README.md by name and date; rerun, commit, and update the README.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=(${PY:-uv run python})
OUT=experiments/numbers
mkdir -p "$OUT"

stamp() {
  echo "# date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "# machine: $(uname -sm); $(lscpu | sed -n 's/^Model name: *//p'); $(nproc) cores;" \
       "$(free -g | awk '/^Mem:/{print $2}') GiB RAM"
  echo "# load average (1/5/15 min) before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
}

pipeline() {
  stamp
  for args in "--image_size=224 --channels=3" "--image_size=224 --channels=1" \
              "--image_size=299 --channels=3"; do
    echo
    echo "\$ python -m tlmed_keras.bench --target=pipeline $args"
    # shellcheck disable=SC2086
    "${PY[@]}" -m tlmed_keras.bench --target=pipeline $args 2>/dev/null | grep -v '^source='
  done
  echo
  echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
}

pipeline > "$OUT/pipeline.txt.tmp"
mv "$OUT/pipeline.txt.tmp" "$OUT/pipeline.txt"
echo "wrote $OUT/pipeline.txt"

if [[ "${1:-}" == "--training" ]]; then
  log="experiments/cpu_speed/logs/run_$(date -u +%Y%m%d_%H%M).txt"
  "${PY[@]}" experiments/cpu_speed/compare_torch.py --rounds 3 --models mobilenetv2,resnet50 \
    --configs torch,keras-tf,keras-tf:precision=mixed_bfloat16 | tee "$log"
  "${PY[@]}" -m experiments.throughput.measure --image_size=64 --batch_size=16 --steps=5 \
    --warmup_steps=2 --backend=auto --out=experiments/throughput/README.md
  echo "wrote $log and experiments/throughput/README.md"
fi
