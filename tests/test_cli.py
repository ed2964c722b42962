"""The entry points' one error layer (tlmed_keras/cli.py): expected errors are one line and
exit 2 (bad flag or value) or 1 (file, disk, run), bugs keep their traceback, --help exits 0,
and bad names fail before TensorFlow loads (issues 16 and 17)."""

from __future__ import annotations

import dataclasses
import errno
import pickle
import textwrap
import zipfile

import pytest
from absl import flags

from tests.conftest import run_python
from tlmed_keras import cli, precheck, weights_guard
from tlmed_keras.data.errors import ChecksumError
from tlmed_keras.errors import WeightsFileError

ENTRY_POINTS = ("train", "evaluate", "export", "data", "models", "eda", "bench", "recipe")


_python = run_python


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# --- what is expected, with which exit code and message ------------------------------------


class UnsafeCheckpointError(pickle.UnpicklingError):  # the model zoo's, matched by name
    pass


class SafetensorError(Exception):  # safetensors' Rust error, matched by name
    pass


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ValueError("Bad --size=3"), 2),
        (ChecksumError("md5 differs"), 1),
        (PermissionError(errno.EACCES, "Permission denied", "/data/x.npz"), 1),
        (OSError(errno.ENOSPC, "No space left on device"), 1),
        (UnsafeCheckpointError("would import os.system"), 1),
        (SafetensorError("header too large"), 1),
        (FloatingPointError("NaN loss"), 1),
        (WeightsFileError("bad file"), 1),
    ],
)
def test_expected_errors_and_their_exit_codes(error, code):
    assert cli.is_expected(error)
    assert cli.exit_code(error) == code


@pytest.mark.parametrize("error", [TypeError("bug"), KeyError("bug"), AttributeError("bug")])
def test_bugs_are_not_expected(error):
    assert not cli.is_expected(error)


def test_os_errors_name_the_file_and_what_to_do():
    denied = PermissionError(errno.EACCES, "Permission denied", "/data/x.npz")
    assert cli.message(denied) == (
        "/data/x.npz: Permission denied; check its permissions (ls -l) or use a path you can "
        "read and write."
    )
    full = OSError(errno.ENOSPC, "No space left on device")
    assert "free disk space and rerun the same command" in cli.message(full)
    folder = IsADirectoryError(errno.EISDIR, "Is a directory", "/d/breastmnist.npz")
    assert cli.message(folder).startswith("/d/breastmnist.npz: Is a directory; a folder stands")


def test_guard_prints_one_line_and_exits(capsys):
    def main(argv):
        raise ValueError("Bad --x=1:\n  accepted: 2.")

    with pytest.raises(SystemExit) as done:
        cli.guard(main, "tlmed_keras.demo")(["prog"])
    assert done.value.code == 2
    assert capsys.readouterr().err == "tlmed_keras.demo: error: Bad --x=1: accepted: 2.\n"


def test_guard_keeps_the_traceback_of_a_bug():
    def main(argv):
        raise TypeError("a real bug")

    with pytest.raises(TypeError, match="a real bug"):
        cli.guard(main, "tlmed_keras.demo")(["prog"])


# --- weights files: one error class, whatever the loader raised ---------------------------


def test_weights_errors_are_wrapped_at_the_loading_call_site(tmp_path):
    path = tmp_path / "w.pth"
    for raised in (
        ValueError("shape (3,) vs (4,)"),
        UnsafeCheckpointError("os.system"),
        SafetensorError("header too large"),
        KeyError("fc.weight"),
    ):
        with (
            pytest.raises(WeightsFileError, match=r"w\.pth.*resnet50") as caught,
            weights_guard.loading_weights(str(path), "resnet50"),
        ):
            raise raised
        assert caught.value.__cause__ is raised
    # A bug is not a weights problem; "imagenet" is not a file: both pass through untouched.
    with pytest.raises(TypeError), weights_guard.loading_weights(str(path), "resnet50"):
        raise TypeError("bug")
    with pytest.raises(ValueError, match="^plain$"), weights_guard.loading_weights("imagenet", "x"):
        raise ValueError("plain")


def test_keras_file_with_a_lambda_layer_says_safe_mode(tmp_path):
    path = tmp_path / "lam.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", '{"layers": [{"class_name": "Lambda"}]}')
    keras_message = "A total of 3 objects could not be loaded. List of objects that could not"
    text = weights_guard.describe(str(path), "mobilenet_v2", ValueError(keras_message))
    assert "Lambda layer" in text and "safe mode" in text and "save_weights" in text
    assert "<Conv2D" not in text


# --- the entry points, as the user runs them ----------------------------------------------


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help_exits_0(module):
    done = _python("-m", f"tlmed_keras.{module}", "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "flags" in done.stdout.lower()


CHECK_NO_TF = textwrap.dedent(
    """
    import runpy, sys
    sys.argv = ["train"] + sys.argv[1:]
    try:
        runpy.run_module("tlmed_keras.train", run_name="__main__")
    except SystemExit as done:
        print("EXIT", done.code, "tensorflow" in sys.modules, "keras" in sys.modules)
    """
)


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("--data=bloodmnistt", "Bad --data='bloodmnistt'"),
        ("--model=resnet5", "Bad --model='resnet5'"),
    ],
)
def test_bad_names_fail_in_one_line_before_tensorflow_loads(flag, expected):
    args = {"--data": "--data=bloodmnist", "--model": "--model=resnet50"}
    args[flag.split("=")[0]] = flag
    done = _python("-c", CHECK_NO_TF, *args.values())
    assert done.stdout.strip().splitlines()[-1] == "EXIT 2 False False", done.stderr[-2000:]
    lines = _error_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"tlmed_keras.train: error: {expected}")


def test_model_names_read_from_source_match_the_registry():
    from tlmed_keras import models

    assert set(precheck.model_names()) == set(models.model_names())


def test_unknown_backend_is_one_line():
    done = _python(
        "-m", "tlmed_keras.train", "--data=breastmnist", "--model=resnet50", "--backend=foo"
    )
    assert done.returncode == 2
    assert _error_lines(done.stderr) == [
        "tlmed_keras.train: error: Unknown backend 'foo'. Accepted: auto, jax, tensorflow, torch."
    ]


def test_evaluate_missing_workdir_is_one_line(tmp_path):
    done = _python("-m", "tlmed_keras.evaluate", f"--workdir={tmp_path / 'nope'}", "--backend=jax")
    assert done.returncode == 1
    lines = _error_lines(done.stderr)
    assert lines[-1].startswith(
        f"tlmed_keras.evaluate: error: --workdir={tmp_path / 'nope'} does not exist"
    )
    assert not any("Traceback" in line for line in lines)


def test_data_file_that_is_a_folder_and_a_missing_file_are_one_line(tmp_path):
    (tmp_path / "breastmnist.npz").mkdir()
    done = _python("-m", "tlmed_keras.data", "--data=breastmnist", f"--data_dir={tmp_path}")
    assert done.returncode == 1
    lines = _error_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("tlmed_keras.data: error: MedMNIST file")
    assert f"{tmp_path / 'breastmnist.npz'} is a folder, not the file" in lines[0]
    done = _python("-m", "tlmed_keras.data", "--data=retinamnist", f"--data_dir={tmp_path}")
    lines = _error_lines(done.stderr)
    assert done.returncode == 1 and len(lines) == 1 and "--download" in lines[0]


def test_export_without_workdir_is_one_line():
    done = _python("-m", "tlmed_keras.export", "--export_dir=unused")
    assert done.returncode == 2
    assert _error_lines(done.stderr) == [
        "tlmed_keras.export: error: flag --workdir=None: Flag --workdir must have a value other "
        "than None."
    ]


def test_weights_load_warnings_are_dropped_on_failure_and_kept_on_success(tmp_path, recwarn):
    import warnings

    path = str(tmp_path / "w.keras")
    with pytest.raises(WeightsFileError), weights_guard.loading_weights(path, "m"):
        warnings.warn("Skipping nested container 1", UserWarning, stacklevel=1)
        raise ValueError("A total of 3 objects could not be loaded.")
    assert not [w for w in recwarn if "Skipping" in str(w.message)]
    with weights_guard.loading_weights(path, "m"):
        warnings.warn("Skipping nested container 2", UserWarning, stacklevel=1)
    assert [str(w.message) for w in recwarn if "Skipping" in str(w.message)] == [
        "Skipping nested container 2"
    ]


def test_folder_in_the_files_place_is_named_when_downloading_too(tmp_path):
    from tlmed_keras.data import catalog
    from tlmed_keras.data.errors import FileMissingError
    from tlmed_keras.data.files import find_or_download

    (tmp_path / "breastmnist.npz").mkdir()

    def no_network(url):
        raise AssertionError("must not download over a folder")

    with pytest.raises(FileMissingError, match="breastmnist.npz is a folder, not the file"):
        find_or_download(
            catalog.get_info("breastmnist"), data_dir=tmp_path, download=True, opener=no_network
        )


def test_ctrl_c_is_one_line_and_exit_130(capsys):
    def main(argv):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as done:
        cli.guard(main, "tlmed_keras.train")(["prog"])
    assert done.value.code == 130
    err = capsys.readouterr().err
    assert err.startswith("tlmed_keras.train: interrupted (Ctrl-C).") and err.count("\n") == 1


@dataclasses.dataclass(frozen=True)
class _Options:
    cli_test_size: int = 1
    cli_test_name: str = "a"
    cli_test_no_flag: bool = True


def test_options_from_flags_reads_the_flags_named_like_the_fields():
    flags.DEFINE_integer("cli_test_size", 7, "Test only.")
    flags.DEFINE_string("cli_test_name", "b", "Test only.")
    flags.FLAGS["cli_test_size"].value = 9  # as if parsed from --cli_test_size=9
    assert cli.flag_values("cli_test_size", "cli_test_name") == {
        "cli_test_size": 9,
        "cli_test_name": "b",
    }
    # A given value wins over its flag; a field without a flag keeps its default.
    options = cli.options_from_flags(_Options, cli_test_name="given")
    assert options == _Options(cli_test_size=9, cli_test_name="given", cli_test_no_flag=True)


def test_workdirs_are_checked_before_any_backend_is_imported(tmp_path):
    # evaluate / export check --workdir first: a mistyped path fails in a second, without
    # paying for TensorFlow / JAX / Keras imports.
    code = (
        "import sys\n"
        "from tlmed_keras.runs import workdirs\n"
        "try:\n"
        f"    workdirs.finished_runs({str(tmp_path / 'nope')!r})\n"
        "except FileNotFoundError as e:\n"
        "    print('refused:', e)\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))\n"
    )
    done = _python("-c", code)
    assert done.returncode == 0, done.stderr
    assert f"refused: --workdir={tmp_path / 'nope'} does not exist" in done.stdout
    assert done.stdout.strip().endswith("[]")
