"""Fixtures of the predict tests: the tiny finished runs of tests/serving (trained once)."""

from tests.serving.conftest import tiny_run  # noqa: F401  (re-exported fixture)
