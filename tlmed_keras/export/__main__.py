"""Export a trained run as a SavedModel in TF Serving's layout.

    python -m tlmed_keras.export --workdir=RUN --export_dir=DIR [--version=N] [--overwrite]
    python -m tlmed_keras.export --workdir=RUN_A,RUN_B,RUN_C --export_dir=DIR [--tta=flip]

Writes ``DIR/<name>/<version>/`` (``serving_default``: raw uint8 images ``[batch, H, W, C]``
at the dataset's native size -> ``probabilities``, ``class_id`` and
``probabilities_calibrated``, the probabilities under the run's temperature fitted on the
validation split: its calibration.json, fitted now if missing), ``DIR/models.config``
and ``DIR/<name>/request.json``. The version is verified against the Keras model on real
images of ``--split`` before it is moved into place. See docs/serving.md.

Several runs (a comma list and/or a quoted glob; same dataset, stored size and label set,
else refused; backbones and model input sizes may differ, each member keeps its own
preprocessing inside the graph) export as ONE SavedModel whose ``probabilities`` are the mean
of the members'. The graph holds the runs' own test-time augmentation by default (their
``--tta`` in config.json, so the served model is the one the trainer scored; members trained
with different modes are refused); ``--tta`` overrides: ``flip`` averages each model over the
horizontal mirror (``shift`` and ``flip_shift``: small shifts too, ``tlmed_keras.tta``). The
ensemble is verified against the Keras ensemble (``runs.ensemble.serving_parts``).
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from tlmed_keras import cli, runtime, tta
from tlmed_keras.runs.workdirs import finished_runs

flags.DEFINE_string(
    "workdir",
    None,
    "Run directory of a finished training run; several (comma list or glob): one SavedModel "
    "of their ensemble (mean probability; backbones and input sizes may differ).",
)
flags.DEFINE_enum(
    "tta",
    None,
    list(tta.NAMES),
    "Inside the exported graph. " + tta.HELP + " Default: the TTA the runs were trained with "
    "(config.json); runs trained with different ones need --tta.",
)
flags.DEFINE_string("export_dir", None, "TF Serving model root (DIR/<name>/<version>/).")
flags.DEFINE_integer("version", None, "Version number; default: one above the highest there.")
flags.DEFINE_string("name", None, "TF Serving model name; default: the dataset name.")
flags.DEFINE_bool("overwrite", False, "Replace an existing version.")
flags.DEFINE_enum("split", "test", ["train", "val", "test"], "Split verified on.")
flags.DEFINE_integer("num_verify", 64, "Images of --split compared with Keras (0 = all).")
flags.DEFINE_float("atol", 1e-4, "Max abs difference of probabilities, SavedModel vs Keras.")
flags.DEFINE_string("data_dir", None, "Folder of the npz files; default: the run's data_dir.")
flags.DEFINE_bool("download", None, "Download a missing data file; default: the run's setting.")
flags.DEFINE_list(
    "platforms",
    ["cpu", "cuda"],
    "JAX backend only: jax2tf native serialization platforms of the artifact. Keep cpu to "
    "serve on CPU; cuda adds NVIDIA GPU serving (needs a TF Serving GPU build).",
)
flags.DEFINE_string(
    "serving_base_path",
    None,
    "Where the server sees --export_dir, for models.config (e.g. /models in the "
    "tensorflow/serving container); default: its absolute path here.",
)
flags.DEFINE_enum("backend", "auto", list(runtime.BACKENDS), "Keras backend of the export.")
flags.mark_flags_as_required(["workdir", "export_dir"])
# Flags handed on to ``export_savedmodel`` as the keywords of the same names.
EXPORT_OPTIONS = ("name", "version", "overwrite", "platforms", "atol", "serving_base_path")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    F = flags.FLAGS
    if not F["verbosity"].present:
        # TF's SavedModel writer logs "Assets written to ..." etc. at INFO through absl; the
        # summary printed below says the same. --verbosity=0 brings them back.
        logging.set_verbosity(logging.WARNING)
    workdirs = finished_runs(F.workdir)  # before the backend: a bad path fails at once
    runtime.setup(F.backend)

    from tlmed_keras.export.savedmodel import export_savedmodel
    from tlmed_keras.housekeeping import remove_stale_export_temps
    from tlmed_keras.runs.calibration import FitOptions, temperature_for
    from tlmed_keras.runs.ensemble import load_members, recorded_tta, serving_parts
    from tlmed_keras.runs.split import load_split
    from tlmed_keras.serving import layout
    from tlmed_keras.serving.verify import ExportVerificationError

    runs = load_members(workdirs)
    run = runs[0]
    tta_mode, tta_source = (F.tta, "--tta") if F.tta else (recorded_tta(runs), "the runs' own")
    remove_stale_export_temps(os.path.join(F.export_dir, F.name or run.info.name))
    images, _ = load_split(run, F.split, F.data_dir, F.download)
    if F.num_verify > 0:
        images = images[: F.num_verify]
    metadata = {"workdir": str(run.workdir), "model": run.config.model, "tta": tta_mode}
    options = FitOptions(data_dir=F.data_dir, download=F.download, tta=tta_mode)
    entry, source = temperature_for(runs, workdirs, options)
    temperature = 1.0 if entry is None else float(entry["temperature"])
    metadata["calibration"] = str(source) if entry else "none: members validated on other folds"
    if len(runs) > 1:
        metadata["ensemble_workdirs"] = [str(r.workdir) for r in runs]
        metadata["ensemble_models"] = [r.config.model for r in runs]
        metadata["ensemble_image_sizes"] = [r.preprocess.image_size for r in runs]
    model, preprocess = serving_parts(runs, tta_mode)
    try:
        result = export_savedmodel(
            model,
            preprocess,
            run.info,
            F.export_dir,
            images,
            metadata=metadata,
            temperature=temperature,
            **cli.flag_values(*EXPORT_OPTIONS),
        )
    except (FileExistsError, ExportVerificationError) as e:
        raise SystemExit(f"Export refused: {e}") from e
    print(result.signature)
    what = f"ensemble of {len(runs)} runs" if len(runs) > 1 else "model"
    print(
        f"Verified on {result.num_verified} {F.split} images: max |SavedModel - Keras {what}| "
        f"probability difference {result.max_abs_diff:.2e} (limit {F.atol:g})."
    )
    print(f"Test-time augmentation in the graph: {tta_mode} ({tta_source}).")
    print(f"probabilities_calibrated: temperature {temperature:.4f} ({metadata['calibration']})")
    print(f"Exported {result.name} version {result.version} -> {result.path}")
    print(f"TF Serving config: {result.models_config}")
    print(f"Sample request:    {result.request}")
    print(f"  {layout.curl_line(result.name, result.request)}")


if __name__ == "__main__":
    cli.run(main)
