"""The study's Table 3 as flagfiles: 11 ImageNet backbones x BloodMNIST, OCTMNIST.

    python -m experiments.table3            # (re)writes flags/paper/ and flags/cpu/table3/
    python -m experiments.table3 --check    # exit 1 if a committed flagfile is out of date

- ``flags/paper/<data>_<model>.cfg``: the study's input sizes (224 px; AlexNet 227; Inception
  V3 299), ImageNet weights, the project's default two-phase schedule. Needs a GPU.
- ``flags/cpu/table3/<data>_<model>.cfg``: the same cells at a CPU budget (64 px input, 75 px
  for Inception V3 (its minimum), 1 + 2 epochs of at most 100 steps each): a smoke-scale run
  for machines without a GPU, not comparable with the study.

Not known here, hence not copied from the study: its source resolution, epochs, learning
rates, optimizer, augmentation. The paper flagfiles upsample the 28 px MedMNIST v2 files
(what existed before MedMNIST+; ``--size=224`` would use the MedMNIST+ 224 px files) and use
the trainer's defaults, written out so that every value is visible in the file.

Run a whole table with ``python -m experiments.sweep --flagfiles='flags/paper/*.cfg'
--seeds=0,1,2 --out=experiments/results/table3``.
"""

from __future__ import annotations

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
PAPER_DIR = REPO / "flags" / "paper"
CPU_DIR = REPO / "flags" / "cpu" / "table3"

# Registry names of the study's backbones, in the study's order.
MODELS = (
    "alexnet",
    "beit_base_patch16_224",
    "inception_v3",
    "vgg16",
    "vgg19",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "squeezenet1_1",
)
DATASETS = ("bloodmnist", "octmnist")
PAPER_INPUT = {"alexnet": 227, "inception_v3": 299}  # others: 224
CPU_INPUT = {"inception_v3": 75}  # others: 64

_COMMON = """--model={model}
--weights=imagenet
--data={data}
--size=28
--data_dir=
--download=true
--image_size={image_size}
--interpolation=bilinear
--unfreeze=all
--optimizer=adamw
--weight_decay=1e-4
--label_smoothing=0.0
--class_weight=none
--dropout=0.0
--backend=jax
"""

_PAPER = """# Study Table 3 cell: {model} on {data} at the study's input size ({image_size} px).
# The study's other settings are not known here: 28 px MedMNIST v2 files upsampled, and the
# trainer's default two-phase schedule. Written by experiments/table3.py; edit it, not this.
{common}--head_epochs=5
--head_lr=1e-3
--finetune_epochs=10
--finetune_lr=1e-4
--warmup_epochs=1
--batch_size=64
--eval_batch_size=256
--augment=flip
--patience=0
--max_steps_per_epoch=0
"""

_CPU = """# Study Table 3 cell at a CPU budget: {model} on {data}, {image_size} px input,
# 1 + 2 epochs of at most 100 steps of 32 images. A smoke-scale run for machines without a
# GPU; its numbers are not comparable with the study's.
# Written by experiments/table3.py; edit it, not this.
{common}--head_epochs=1
--head_lr=1e-3
--finetune_epochs=2
--finetune_lr=1e-4
--warmup_epochs=0.5
--batch_size=32
--eval_batch_size=128
--augment=flip
--patience=0
--max_steps_per_epoch=100
"""


def _text(template: str, model: str, data: str, image_size: int) -> str:
    common = _COMMON.format(model=model, data=data, image_size=image_size)
    return template.format(model=model, data=data, image_size=image_size, common=common)


def flagfiles() -> dict[pathlib.Path, str]:
    """Every Table 3 flagfile (paper and CPU variants): path -> text."""
    out = {}
    for data in DATASETS:
        for model in MODELS:
            stem = f"{data}_{model}.cfg"
            out[PAPER_DIR / stem] = _text(_PAPER, model, data, PAPER_INPUT.get(model, 224))
            out[CPU_DIR / stem] = _text(_CPU, model, data, CPU_INPUT.get(model, 64))
    return out


def main(argv: list[str]) -> int:
    if {"-h", "--help", "--helpfull"} & set(argv):  # help must not (re)write any file
        print(__doc__)
        return 0
    check = "--check" in argv
    stale = []
    for path, text in flagfiles().items():
        if path.is_file() and path.read_text() == text:
            continue
        if check:
            stale.append(str(path.relative_to(REPO)))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print("Out of date (run python -m experiments.table3):\n  " + "\n  ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
