"""Errors of the data layer: one class per way a MedMNIST file can fail us.

Every class derives from ``MedMNISTFileError`` (catch that to handle them all) and from the
built-in exception a caller would expect (``FileNotFoundError``, ``OSError``, ``ValueError``),
so generic handlers keep working.
"""

from __future__ import annotations


class MedMNISTFileError(Exception):
    """A MedMNIST file could not be found, fetched or trusted."""


class FileMissingError(MedMNISTFileError, FileNotFoundError):
    """The file is in none of the places looked in and downloading is off."""


class DownloadError(MedMNISTFileError, OSError):
    """The download failed or was cut short; no partial file was left behind."""


class ChecksumError(MedMNISTFileError, ValueError):
    """The file's MD5 differs from the one the catalog (or the caller) expects."""


class InvalidFileError(MedMNISTFileError, ValueError):
    """The file is readable but is not a valid MedMNIST npz."""


class NotAnNpzError(InvalidFileError):
    """The file is not a zip of ``.npy`` members (not an npz)."""


class MissingKeysError(InvalidFileError):
    """The npz lacks some of the ``{split}_images`` / ``{split}_labels`` arrays."""


class BadArrayError(InvalidFileError):
    """An array has the wrong shape or dtype, or cannot be read safely."""


class BadLabelsError(InvalidFileError):
    """Labels fall outside the range the task allows."""
