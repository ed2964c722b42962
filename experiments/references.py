"""Published numbers the sweep's table is compared with, each with where it came from.

Only numbers we could check are here; a missing entry is shown blank, never guessed.

- ``STUDY``: the study whose Table 3 the paper flagfiles reproduce. Only BEiT's best test
  accuracy is available to us (0.9664 BloodMNIST, 0.818 OCTMNIST); its other cells, and every
  AUC, are not, and stay blank.
- ``MEDMNIST_V2``: test ACC / AUC of the MedMNIST v2 benchmark (Yang et al., Scientific Data
  10:41, 2023, Table 3, https://doi.org/10.1038/s41597-022-01721-8). BreastMNIST and
  RetinaMNIST come from ../shared/README.md (ResNet-18 (28) and Google AutoML Vision). For
  BloodMNIST and OCTMNIST, and the other methods, the paper's table was not reachable through
  our reference search (only third-party copies were), so they are left blank.
- ``MEDMNIST_PLUS``: MedMNIST+ (Doerrich et al. 2024), best at 28 px input, from
  ../shared/README.md (published in percent; stored here as fractions).
"""

from __future__ import annotations

from typing import NamedTuple


class Score(NamedTuple):
    acc: float | None
    auc: float | None


STUDY_SOURCE = (
    "The study's Table 3: only BEiT's best test ACC is available here (BloodMNIST 0.9664, "
    "OCTMNIST 0.818); its other cells and its AUCs are left blank rather than invented."
)
# (model as the registry names it, dataset) -> Score
STUDY: dict[tuple[str, str], Score] = {
    ("beit_base_patch16_224", "bloodmnist"): Score(0.9664, None),
    ("beit_base_patch16_224", "octmnist"): Score(0.818, None),
}

MEDMNIST_V2_METHODS = (
    "ResNet-18 (28)",
    "ResNet-18 (224)",
    "ResNet-50 (28)",
    "ResNet-50 (224)",
    "auto-sklearn",
    "AutoKeras",
    "Google AutoML Vision",
)
MEDMNIST_V2_SOURCE = (
    "MedMNIST v2 (Yang et al., Sci. Data 10:41, 2023, Table 3), test ACC / AUC, as quoted in "
    "../shared/README.md; cells we could not verify (all of BloodMNIST and OCTMNIST, and the "
    "other methods) are blank."
)
# dataset -> method -> Score
MEDMNIST_V2: dict[str, dict[str, Score]] = {
    "breastmnist": {
        "ResNet-18 (28)": Score(0.863, 0.901),
        "Google AutoML Vision": Score(0.861, 0.919),
    },
    "retinamnist": {
        "ResNet-18 (28)": Score(0.524, 0.717),
        "Google AutoML Vision": Score(0.531, 0.750),
    },
}

MEDMNIST_PLUS_SOURCE = (
    "MedMNIST+ (Doerrich et al. 2024), best at 28 px input, as quoted in ../shared/README.md."
)
MEDMNIST_PLUS: dict[str, Score] = {
    "breastmnist": Score(0.8654, 0.8908),
    "retinamnist": Score(0.5425, 0.7535),
}


def study(model: str, data: str) -> Score:
    return STUDY.get((model, data), Score(None, None))


def medmnist_v2(data: str, method: str = "ResNet-18 (28)") -> Score:
    return MEDMNIST_V2.get(data, {}).get(method, Score(None, None))


def medmnist_plus(data: str) -> Score:
    return MEDMNIST_PLUS.get(data, Score(None, None))
