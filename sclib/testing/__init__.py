"""Test helpers that ship with sclib, for sclib's own suite and for plugin authors.

* :class:`ManualClock`: a clock you move by hand, so lease and backoff tests never
  sleep.
* :mod:`sclib.testing.jobstore`: the JobStore contract suite. A new backend's test
  module subclasses :class:`~sclib.testing.jobstore.JobStoreContract` and provides a
  ``store`` fixture; passing it is what "done" means for a backend.

This package imports pytest; it is not imported by ``import sclib``.
"""

from __future__ import annotations

from sclib.testing.clock import ManualClock

__all__ = ["ManualClock"]
