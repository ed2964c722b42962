"""The general recipe (issue #12): dataset-free, valid for any catalog set, rule written in it."""

from __future__ import annotations

import pathlib

import pytest

from tests.experiments.test_flagfiles import parse
from tlmed_keras.runs import config as cfg

REPO = pathlib.Path(__file__).resolve().parents[2]
RECIPE = REPO / "flags" / "recipes" / "mobilenet_v2_torchvision.cfg"
CANDIDATES = sorted((REPO / "flags" / "recipes" / "candidates").glob("*.cfg"))
DATASET_FLAGS = ("--data=", "--data_dir=", "--seed=", "--workdir=")


def _with_data(path: pathlib.Path, tmp_path: pathlib.Path, data: str) -> pathlib.Path:
    """A flagfile that nests ``path`` and adds what the user passes on the command line."""
    wrapper = tmp_path / f"{data}.cfg"
    wrapper.write_text(f"--flagfile={path}\n--data={data}\n")
    return wrapper


@pytest.mark.parametrize("path", [RECIPE, *CANDIDATES], ids=lambda p: p.name)
def test_recipe_files_hold_nothing_dataset_specific(path):
    lines = [line.strip() for line in path.read_text().splitlines()]
    flags_set = [line for line in lines if line.startswith("--")]
    assert flags_set and not [f for f in flags_set if f.startswith(DATASET_FLAGS)]


@pytest.mark.parametrize("data", ["breastmnist", "retinamnist", "chestmnist", "organamnist"])
@pytest.mark.parametrize("path", [RECIPE, *CANDIDATES], ids=lambda p: p.name)
def test_recipe_is_a_valid_config_for_any_catalog_set(path, data, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # ../shared and nested flagfiles are relative to the repository
    config = parse(_with_data(path, tmp_path, data))
    cfg.check(config)  # the weights file it names exists (../shared), the flags are valid
    assert config.data == data
    # A candidate changes one thing: its backbone (with that backbone's genuine weights file)
    # or the data file's size (MedMNIST+'s native 64 px); the recipe itself is MobileNetV2 at 28.
    weights = {
        "mobilenet_v2_torchvision": "mobilenet_v2-b0353104.pth",
        "efficientnet_lite0": "efficientnet-lite0-57934424.pth",
        "efficientnet_lite2": "efficientnet-lite2-9656183e.pth",
    }
    assert config.weights.endswith(weights[config.model])
    assert config.size == (64 if path.stem.startswith("n64") else 28)
    if path == RECIPE:
        assert config.model == "mobilenet_v2_torchvision"


def test_recipe_states_its_decision_rule_and_is_the_chosen_candidate(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    text = RECIPE.read_text()
    assert "DECISION RULE" in text and "before any" in text
    recipe = parse(_with_data(RECIPE, tmp_path, "breastmnist")).to_dict()
    chosen = [
        p.stem
        for p in CANDIDATES
        if {**parse(_with_data(p, tmp_path, "breastmnist")).to_dict(), "tta": recipe["tta"]}
        == recipe
    ]
    assert len(chosen) == 1 and f"Chosen: {chosen[0]}" in text


# What a user who passes no tuning flags does not get from the recipe, and why (docs/recipes.md,
# "The trainer's defaults"): the model and its weights file, the size and files of the data,
# the input size (the backbone's native one by default; 112 px is the recipe's choice for
# time), flip TTA (doubles evaluation), and the evaluation batch.
RECIPE_ONLY = {"model", "weights", "size", "download", "image_size", "tta", "eval_batch_size"}


def test_trainer_defaults_match_the_recipe_but_for_the_documented_fields(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    recipe = parse(_with_data(RECIPE, tmp_path, "breastmnist")).to_dict()
    defaults = cfg.Config(data="breastmnist").to_dict()
    differing = {name for name in recipe if recipe[name] != defaults[name]}
    assert differing <= RECIPE_ONLY, sorted(differing - RECIPE_ONLY)
