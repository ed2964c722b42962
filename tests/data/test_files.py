"""Finding, downloading and verifying MedMNIST files (no network: file:// and 127.0.0.1)."""

from __future__ import annotations

import io
import shutil
import urllib.error

import numpy as np
import pytest

from tests.conftest import synthetic_arrays
from tests.data.conftest import snapshot
from tlmed_keras.data import catalog, files, npz
from tlmed_keras.data.errors import (
    ChecksumError,
    DownloadError,
    FileMissingError,
)

OFFICIAL = {"breastmnist": "750601b1f35ba3300ea97c75c52ff8f6", "retinamnist": None}


@pytest.mark.parametrize("name", ["breastmnist", "retinamnist"])
def test_official_files_match_catalog_md5(medmnist_dir, name):
    info = catalog.get_info(name)
    assert files.md5sum(medmnist_dir / info.filename) == info.md5
    found = files.find_or_download(info, medmnist_dir, download=False, cache_dir=None)
    assert found == medmnist_dir / info.filename


def test_catalog_md5_is_the_published_one():
    assert catalog.get_info("breastmnist").md5 == OFFICIAL["breastmnist"]


def test_finds_file_in_cache_when_no_data_dir(make_npz, tmp_path):
    path = make_npz("bloodmnist")
    info = catalog.get_info("bloodmnist")
    found = files.find_or_download(
        info, None, download=False, cache_dir=path.parent, expected_md5=files.md5sum(path)
    )
    assert found == path


def test_data_dir_is_searched_before_cache(make_npz, tmp_path):
    first = make_npz("bloodmnist", seed=1)
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(first, cache / first.name)
    info = catalog.get_info("bloodmnist")
    found = files.find_or_download(info, first.parent, False, cache_dir=cache, verify=False)
    assert found == first


def test_offline_missing_file_names_file_places_and_url(tmp_path):
    info = catalog.get_info("dermamnist", 64)
    cache = tmp_path / "cache"
    with pytest.raises(FileMissingError) as err:
        files.find_or_download(info, tmp_path / "mine", download=False, cache_dir=cache)
    message = str(err.value)
    assert "dermamnist_64.npz" in message
    assert str(tmp_path / "mine") in message and str(cache) in message
    assert info.url in message


def test_wrong_md5_raises_and_leaves_user_file(make_npz):
    path = make_npz("breastmnist")
    before = snapshot(path)
    info = catalog.get_info("breastmnist")
    with pytest.raises(ChecksumError, match=info.md5):
        files.find_or_download(info, path.parent, download=True, cache_dir=None)
    assert snapshot(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def _serve_file(tmp_path, payload: bytes) -> str:
    source = tmp_path / "server" / "payload.npz"
    source.parent.mkdir()
    source.write_bytes(payload)
    return source.as_uri()


def test_download_from_file_url_verifies_and_renames(tmp_path):
    payload = io.BytesIO()
    np.savez_compressed(payload, **synthetic_arrays("pathmnist"))
    url = _serve_file(tmp_path, payload.getvalue())
    info = catalog.get_info("pathmnist")
    target = tmp_path / "target"
    found = files.find_or_download(
        info,
        target,
        cache_dir=None,
        url=url,
        expected_md5=files.md5sum(url.removeprefix("file://")),
        progress=False,
    )
    assert found == target / "pathmnist.npz"
    assert found.read_bytes() == payload.getvalue()
    assert [p.name for p in target.iterdir()] == ["pathmnist.npz"]  # no temp file left


def test_download_with_wrong_md5_keeps_nothing(tmp_path):
    url = _serve_file(tmp_path, b"not what the catalog promised")
    info = catalog.get_info("pathmnist")
    target = tmp_path / "target"
    with pytest.raises(ChecksumError, match="Nothing was kept"):
        files.find_or_download(info, target, cache_dir=None, url=url, progress=False)
    assert list(target.iterdir()) == []


def test_truncated_http_download_leaves_no_file(tmp_path, http_server):
    body = b"x" * 5000
    base = http_server({"/f.npz": (body, 9000)})  # announces 9000, sends 5000, hangs up
    info = catalog.get_info("octmnist")
    target = tmp_path / "target"
    with pytest.raises(DownloadError) as err:
        files.find_or_download(
            info, target, cache_dir=None, url=f"{base}/f.npz", verify=False, progress=False
        )
    assert "octmnist.npz" in str(err.value) and f"{base}/f.npz" in str(err.value)
    assert list(target.iterdir()) == []


def test_http_download_succeeds(tmp_path, http_server):
    body = b"y" * 3000
    base = http_server({"/f.npz": (body, len(body))})
    info = catalog.get_info("octmnist")
    found = files.find_or_download(
        info,
        tmp_path,
        cache_dir=None,
        url=f"{base}/f.npz",
        expected_md5=__import__("hashlib").md5(body).hexdigest(),
        progress=False,
    )
    assert found.read_bytes() == body


def test_failing_opener_gives_download_error_with_places(tmp_path):
    def offline(url):
        raise urllib.error.URLError("no route to host")

    info = catalog.get_info("chestmnist")
    with pytest.raises(DownloadError) as err:
        files.find_or_download(info, tmp_path / "d", cache_dir=tmp_path / "c", opener=offline)
    message = str(err.value)
    assert "no route to host" in message and info.url in message
    assert str(tmp_path / "c") in message


def test_download_never_overwrites_existing_file(tmp_path):
    existing = tmp_path / "kept.npz"
    existing.write_bytes(b"user data")
    before = snapshot(existing)
    with pytest.raises(FileExistsError):
        files.download_file(_serve_file(tmp_path, b"new"), existing, None, progress=False)
    assert snapshot(existing) == before


def test_md5_of_large_files_is_remembered_until_file_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MD5_CACHE_MIN_BYTES", 0)
    monkeypatch.setenv("TLMED_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "big.npz"
    path.write_bytes(b"abc")
    first = files.cached_md5(path)
    calls = []
    real_md5sum = files.md5sum
    monkeypatch.setattr(files, "md5sum", lambda p: calls.append(p) or real_md5sum(p))
    assert files.cached_md5(path) == first and calls == []
    path.write_bytes(b"abcd")  # new size: the remembered digest no longer applies
    assert files.cached_md5(path) == real_md5sum(path) != first
    assert len(calls) == 1


@pytest.mark.parametrize("name", ["breastmnist", "retinamnist"])
def test_iter_rows_streams_the_same_arrays_as_np_load(medmnist_dir, name):
    path = medmnist_dir / f"{name}.npz"
    with np.load(path, allow_pickle=False) as data:
        for key in ("train_images", "test_labels"):
            chunks = list(npz.iter_rows(path, key, rows_per_chunk=100))
            assert max(len(c) for c in chunks) == 100
            np.testing.assert_array_equal(np.concatenate(chunks), data[key])
