"""predict reads images as medical images come: 16/32-bit grey, DICOM, and refuses (one line
each) what cannot give a meaningful answer: flat images and decompression bombs."""

from __future__ import annotations

import pathlib
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from tlmed_keras.predict import depth, dicom
from tlmed_keras.predict.images import (
    MAX_PIXELS,
    ImageFileError,
    read_image,
    read_images,
    to_medmnist,
)

pydicom = pytest.importorskip("pydicom")  # a project dependency: present wherever it installs


def _ramp_12bit(width: int = 4096, height: int = 16) -> np.ndarray:
    """12-bit data (0-4095) in a 16-bit container, as X-ray exports hold it."""
    levels = np.arange(width, dtype=np.int64) * 4095 // (width - 1)
    return np.tile(levels.astype(np.uint16), (height, 1))


def test_a_16bit_random_image_is_no_longer_clipped_white(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 65536, (64, 64), dtype=np.uint16)).save(tmp_path / "r.png")
    image = read_image(tmp_path / "r.png")
    assert image.mode == "I;16"
    assert np.asarray(image.convert("L")).mean() > 250  # what Pillow alone gives: white
    pixels = to_medmnist(image, 28, 1, centre_crop=False)
    assert 100 < pixels.mean() < 155 and pixels.std() > 20


@pytest.mark.parametrize(
    "name, array",
    [
        ("ramp.png", _ramp_12bit()),  # Pillow mode I;16
        ("ramp.tif", _ramp_12bit().astype(">u2")),  # I;16B (big-endian TIFF)
        ("ramp32.tif", _ramp_12bit().astype(np.int32) - 2000),  # I, negative values too
        ("rampf.tif", _ramp_12bit().astype(np.float32) / 4095 - 0.5),  # F
    ],
)
def test_a_12bit_ramp_spans_0_to_255_in_every_deep_mode(tmp_path, name, array):
    Image.fromarray(array).save(tmp_path / name)
    image = read_image(tmp_path / name)
    assert image.mode in depth.DEEP_GREY_MODES
    grey = np.asarray(depth.to_8bit(image))
    assert grey.dtype == np.uint8 and grey.min() == 0 and grey.max() == 255
    assert np.all(np.diff(grey[0].astype(int)) >= 0)  # the ramp stays a ramp
    assert abs(int(grey[0, grey.shape[1] // 2]) - 128) <= 3  # linear: the middle is mid-grey


def test_a_hot_pixel_does_not_darken_the_image():
    ramp = _ramp_12bit()
    ramp[0, 0] = 65535  # one dead detector element at full scale
    grey = depth.scale_to_uint8(ramp)
    assert grey[5, -10] == 255 and abs(int(grey[5].mean()) - 127) <= 3
    by_min_max = depth.scale_to_uint8(ramp, (0, 65535))  # what the min-max stretch would do
    assert by_min_max[5].mean() < 10


def test_nan_and_a_flat_deep_image_do_not_crash():
    values = np.array([[np.nan, 0.0], [1.0, 2.0]], np.float32)
    scaled = depth.scale_to_uint8(values).astype(int)
    assert scaled[0].tolist() == [0, 0] and abs(scaled[1, 0] - 128) <= 1 and scaled[1, 1] == 255
    assert not depth.scale_to_uint8(np.full((3, 3), 7, np.uint16)).any()


def _png_of_zeros(path: pathlib.Path, width: int, height: int) -> pathlib.Path:
    """A valid 1-bit greyscale PNG of zeros, compressed row by row (a few hundred KB on disk,
    never the whole image in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    packer, row = zlib.compressobj(9), bytes(1 + (width + 7) // 8)  # filter byte + bits
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
    path.write_bytes(png + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [(30_000, 30_000), (12_000, 9_000)])
def test_decompression_bombs_are_refused_unread(tmp_path, side):
    # 900 MP: Pillow's own error; 108 MP: over MAX_PIXELS, where Pillow would only warn.
    bomb = _png_of_zeros(tmp_path / "bomb.png", *side)
    assert bomb.stat().st_size < 2_000_000 and side[0] * side[1] > MAX_PIXELS
    default_limit, start = Image.MAX_IMAGE_PIXELS, time.perf_counter()
    with pytest.raises(ImageFileError) as caught:
        read_image(bomb)
    assert time.perf_counter() - start < 2  # refused from the header, nothing decoded
    message = str(caught.value)
    assert "\n" not in message and "decompression bomb" in message and "Downscale" in message
    assert f"{side[0]}x{side[1]} = {side[0] * side[1]:,} pixels" in message
    assert default_limit == Image.MAX_IMAGE_PIXELS  # Pillow's own limit is back as it was


def test_flat_images_are_refused_and_the_others_kept(tmp_path):
    Image.new("L", (1, 1), 128).save(tmp_path / "grey1x1.png")
    Image.new("RGBA", (40, 30), (200, 10, 10, 0)).save(tmp_path / "clear.png")  # invisible
    Image.fromarray(_ramp_12bit()).save(tmp_path / "xray16.png")
    (tmp_path / "notes.png").write_text("not pixels")
    paths = [tmp_path / n for n in ("grey1x1.png", "xray16.png", "clear.png", "notes.png")]
    kept, refusals = read_images(paths)
    assert [pathlib.Path(p).name for p, _ in kept] == ["xray16.png"]
    assert len(refusals) == 3 and all("\n" not in line for line in refusals)
    assert "grey1x1.png" in refusals[0] and "flat value" in refusals[0]
    assert "clear.png" in refusals[1] and "flat value (0)" in refusals[1]
    assert "notes.png" in refusals[2] and "not an image" in refusals[2]


def _write_dicom(path, pixels, photometric="MONOCHROME2", frames=1, **elements):
    """A minimal uncompressed Secondary Capture file of unsigned 16-bit ``pixels``."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_rescale_and_window_are_applied(tmp_path):
    stored = _ramp_12bit(256, 4)  # 0..4095; slope 2, intercept -1000: -1000..7190 "HU"
    window = {"RescaleSlope": 2, "RescaleIntercept": -1000, "WindowCenter": 1000}
    path = _write_dicom(tmp_path / "ct.dcm", stored, WindowWidth=2001, **window)
    grey = np.asarray(read_image(path))
    units = stored[0].astype(float) * 2 - 1000
    assert np.all(grey[0][units <= 0] == 0) and np.all(grey[0][units >= 2000] == 255)
    inside = (units > 100) & (units < 1900)  # linear in between: (HU - 0) / 2000 * 255
    np.testing.assert_allclose(grey[0][inside], units[inside] / 2000 * 255, atol=1.5)


def test_dicom_without_a_window_spans_its_own_range(tmp_path):
    grey = np.asarray(read_image(_write_dicom(tmp_path / "raw.dcm", _ramp_12bit(256, 4) // 4)))
    assert grey.min() == 0 and grey.max() == 255


def test_monochrome1_is_inverted(tmp_path):
    stored = _ramp_12bit(256, 4)
    normal = read_image(_write_dicom(tmp_path / "m2.dcm", stored))
    inverse = read_image(_write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1"))
    assert normal.mode == inverse.mode == "L"
    np.testing.assert_array_equal(np.asarray(inverse), 255 - np.asarray(normal))
    assert np.asarray(inverse)[0, 0] == 255  # stored 0 is white in MONOCHROME1


def test_multi_frame_dicom_is_refused_in_one_line(tmp_path):
    frames = np.stack([_ramp_12bit(32, 32)] * 3)
    path = _write_dicom(tmp_path / "series.dcm", frames, frames=3)
    with pytest.raises(ImageFileError, match=r"multi-frame DICOM \(3 frames\).*frame") as caught:
        read_image(path)
    assert "\n" not in str(caught.value)


def _shipped(name: str) -> str:
    """A sample file inside pydicom's wheel (``download=False``: tests never fetch)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom no longer ships {name} in its wheel"
    return path


def test_pydicom_samples_become_grey_images_like_a_viewer():
    mr = _shipped("MR_small.dcm")  # window 600 / 1600 over signed 16-bit MR values
    assert dicom.looks_like_dicom(mr)
    grey = np.asarray(read_image(mr)).astype(float)
    stored = pydicom.dcmread(mr).pixel_array.astype(float)
    centre, width = 600 - 0.5, 1600 - 1  # DICOM's LINEAR window (PS3.3 C.11.2.1.2.1)
    expected = np.clip((stored - centre) / width + 0.5, 0, 1) * 255
    np.testing.assert_allclose(grey, expected, atol=1.0)
    ct = np.asarray(read_image(_shipped("CT_small.dcm")))  # Hounsfield units, no window
    assert ct.min() == 0 and ct.max() == 255
    compressed = np.asarray(read_image(_shipped("MR_small_RLE.dcm")))  # RLE: decodable
    np.testing.assert_array_equal(compressed, np.asarray(read_image(mr)))


@pytest.mark.parametrize(
    "name, pattern",
    [
        ("MR_small_jpeg_ls_lossless.dcm", r"compressed as JPEG-LS Lossless.*decompress it"),
        ("JPEG-lossy.dcm", r"compressed as JPEG Extended.*decompress it"),  # 12-bit JPEG
        ("SC_rgb_rle_2frame.dcm", r"multi-frame DICOM \(2 frames\)"),
        ("rtplan.dcm", r"holds no image .*RT Plan"),
    ],
)
def test_dicom_files_predict_cannot_use_are_refused_by_name(name, pattern):
    from pydicom.pixels import get_decoder

    path = _shipped(name)
    syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if syntax.is_compressed and get_decoder(syntax).is_available and "jpeg_ls" in name:
        pytest.skip(f"a {syntax.name} decoder is installed here: this file is readable")
    with pytest.raises(ImageFileError, match=pattern) as caught:
        read_image(path)
    assert "\n" not in str(caught.value) and name in str(caught.value)


def test_colour_dicom_is_rgb_and_pydicom_warnings_stay_quiet():
    bars = np.asarray(read_image(_shipped("SC_rgb_rle.dcm")))  # red, green, blue, grey bars
    assert bars.shape == (100, 100, 3) and bars[0, 50].tolist() == [255, 0, 0]
    ybr = np.asarray(read_image(_shipped("SC_rgb_jpeg_dcmtk.dcm")))  # the same, YBR_FULL JPEG
    assert np.abs(ybr.astype(int) - bars).mean() < 2  # brought to RGB (lossy: not exact)
    path = _shipped("SC_rgb_jpeg.dcm")  # a VR pydicom warns about
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        pydicom.dcmread(path)
    assert seen  # pydicom itself does warn about this file
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        image = read_image(path)
    assert not seen and image.mode == "RGB" and image.size == (256, 256)
