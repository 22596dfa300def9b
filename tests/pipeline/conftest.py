"""Fixtures shared by the pipeline tests."""

from tests.pipeline.pipeline_setup import setup

__all__ = ["setup"]
