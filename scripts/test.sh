#!/usr/bin/env bash
# The project's test command (README "Set-up", and what CI runs).
# 1. Installs the locked environment.
# 2. Adds the parity-test extras (PyTorch CPU, transformers) OUTSIDE the lock: our own install
#    never pulls torch (pyproject's override drops it), but the AlexNet / SqueezeNet / BEiT /
#    MobileNetV2 converters are checked against reference PyTorch modules when torch can be had.
# 3. Runs the linters: `ruff check .` and `ruff format --check .` (a finding fails the run;
#    `uv run ruff check --fix . && uv run ruff format .` fixes most).
# 4. Runs pytest (slow checks excluded; `bash scripts/test.sh -m slow` runs those) in
#    TLMED_TEST_WORKERS processes (pytest-xdist, default 2; each test file stays in one worker
#    so its module fixtures are built once): most tests wait on one core (subprocess start-up,
#    tracing), so two workers on CI's 2 cores cut the wall time (17 min serial on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
uv sync --frozen
py=.venv/bin/python
# --no-config: the project's torch override must not apply to this deliberate install.
if ! "$py" -c "import torch, transformers" 2>/dev/null; then
  if [ -d /opt/wheels ] && ls /opt/wheels/torch-2.13.0* >/dev/null 2>&1; then
    torch_src=(--find-links /opt/wheels)      # this workplace's local CPU wheel
  else
    torch_src=(--index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple)
  fi
  uv pip install --no-config --python "$py" "${torch_src[@]}" "torch==2.13.0" \
    || echo "NOTE: PyTorch could not be installed: torch parity tests will be skipped."
  uv pip install --no-config --python "$py" "transformers>=4.40,<6" "safetensors" \
    || echo "NOTE: transformers could not be installed: BEiT parity test will be skipped."
fi
uv run --frozen ruff check .
uv run --frozen ruff format --check .
exec uv run --frozen pytest -n "${TLMED_TEST_WORKERS:-2}" --dist loadfile "$@"
