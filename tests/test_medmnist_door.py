"""medmnist is our catalog's source, but none of its noise or torch imports reach users."""

import subprocess
import sys

from tlmed_keras._medmnist import evaluator_module, info_module


def test_catalog_import_runs_neither_medmnist_init_nor_torch():
    code = (
        "import sys; from tlmed_keras.data import catalog; catalog.get_info('bloodmnist'); "
        "print('torch' in sys.modules, 'medmnist' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]
    assert "Please install" not in result.stdout + result.stderr


def test_info_is_medmnists_own_dictionary():
    info = info_module()
    assert info.INFO["bloodmnist"]["n_samples"]["train"] == 11959  # the published split size
    assert "getAUC" in dir(evaluator_module())
