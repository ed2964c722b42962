#!/usr/bin/env bash
# The PyTorch peer of compare_torch.py in its own venv (.venv-torch-peer): torch 2.13 CPU and
# torchvision 0.28 (its pair), installed with --no-deps. Kept out of the project's venv on
# purpose: PyPI's torchvision is a CUDA build whose C++ operators don't load beside the CPU
# torch, and transformers (needed by the BEiT parity tests) then refuses to import its models.
# compare_torch.py works around the operators for the classification models it times.
#   bash experiments/cpu_speed/setup_torch_peer.sh
#   uv run python experiments/cpu_speed/compare_torch.py --torch_python=.venv-torch-peer/bin/python ...
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.venv-torch-peer
python3 -m venv "$venv"
if ls /opt/wheels/torch-2.13.0* >/dev/null 2>&1; then
  torch_src=(--find-links /opt/wheels)      # this workplace's local CPU wheel
else
  torch_src=(--index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple)
fi
"$venv/bin/pip" install --quiet "${torch_src[@]}" "torch==2.13.0" numpy pillow  # torchvision imports PIL
"$venv/bin/pip" install --quiet --no-deps "torchvision==0.28.0"
"$venv/bin/python" - <<'PY'
import sys
sys.path.insert(0, "experiments/cpu_speed")
from compare_torch import import_torchvision
tv = import_torchvision()
import torch
print(f"peer ready: torch {torch.__version__}, torchvision {tv.__version__}")
PY
