"""Backbones from keras-hub (filled in below)."""

from __future__ import annotations


def specs() -> dict:
    return {}
