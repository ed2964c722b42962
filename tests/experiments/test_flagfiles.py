"""The committed sweep flagfiles: up to date with their generator, and valid trainer flags."""

from __future__ import annotations

import pathlib

import pytest
from absl import flags

from experiments import table3
from tlmed_keras.runs import config as cfg

REPO = pathlib.Path(__file__).resolve().parents[2]
REALDATA = sorted((REPO / "flags" / "cpu" / "realdata").glob("*.cfg"))
TABLE3 = sorted(table3.flagfiles())
RETINA_TUNING = sorted((REPO / "flags" / "cpu" / "realdata" / "retina_tuning").glob("*.cfg"))


def parse(path: pathlib.Path) -> cfg.Config:
    """The Config ``python -m tlmed_keras.train --flagfile=path`` would build."""
    values = flags.FlagValues()
    define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}
    for name, default, help_ in cfg.fields_help():
        define.get(type(default), flags.DEFINE_string)(name, default, help_, flag_values=values)
    values(["train", f"--flagfile={path}"])
    return cfg.Config(**{name: values[name].value for name, _, _ in cfg.fields_help()})


def test_table3_flagfiles_are_up_to_date():
    assert table3.main(["--check"]) == 0
    assert len(TABLE3) == 2 * len(table3.MODELS) * len(table3.DATASETS) == 44


@pytest.mark.parametrize(
    "path", TABLE3 + REALDATA + RETINA_TUNING, ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_flagfile_is_a_valid_config(path, monkeypatch):
    monkeypatch.chdir(REPO)  # relative paths (../shared) are taken from the repository root
    config = parse(path)
    cfg.check(config)
    assert path.stem == f"{config.data}_{config.model}" or "realdata" in path.parts


def test_paper_input_sizes_are_the_studys():
    sizes = {(c.model, c.data): c.image_size for c in map(parse, table3.PAPER_DIR.glob("*.cfg"))}
    assert {m for m, _ in sizes} == set(table3.MODELS)
    for (model, _), size in sizes.items():
        assert size == {"alexnet": 227, "inception_v3": 299}.get(model, 224)


def test_realdata_pairs_differ_only_in_weights():
    assert [p.stem for p in REALDATA] == [
        f"{d}_mobilenet_v2_{w}"
        for d in ("breastmnist", "retinamnist")
        for w in ("imagenet", "scratch")
    ]
    for data in ("breastmnist", "retinamnist"):
        pre = parse(REPO / "flags/cpu/realdata" / f"{data}_mobilenet_v2_imagenet.cfg").to_dict()
        scratch = parse(REPO / "flags/cpu/realdata" / f"{data}_mobilenet_v2_scratch.cfg").to_dict()
        diff = {k for k in pre if pre[k] != scratch[k]}
        assert diff == {"weights"} and scratch["weights"] == "none"
        assert pre["weights"].endswith("mobilenet_v2-b0353104.pth")


def test_retina_tuning_candidates_change_only_recipe_flags_and_one_was_adopted():
    """Every candidate nests recipe v1 and changes recipe flags only; the committed pretrained
    RetinaMNIST flagfile (recipe v2) is exactly one of the candidates."""
    recipe = {"finetune_lr", "augment", "label_smoothing", "finetune_epochs", "image_size"}
    v1 = parse(REPO / "flags/cpu/realdata/retina_tuning/recipe_v1.cfg").to_dict()
    adopted = parse(REPO / "flags/cpu/realdata/retinamnist_mobilenet_v2_imagenet.cfg").to_dict()
    candidates = {p.stem: parse(p).to_dict() for p in RETINA_TUNING if p.stem != "recipe_v1"}
    assert len(candidates) >= 2
    for name, candidate in candidates.items():
        diff = {k for k in v1 if v1[k] != candidate[k]}
        assert diff and diff <= recipe, (name, diff)
    assert [name for name, c in candidates.items() if c == adopted] == ["basic_ls0.1_128px"]
