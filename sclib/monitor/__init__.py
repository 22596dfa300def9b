"""Watching the queue: :class:`JobMonitor` (overview, health, stale and failed
jobs, cleanup), its performance report (:mod:`sclib.monitor.report`) and the
numbers both use (:mod:`sclib.monitor.stats`).
"""

from __future__ import annotations

from sclib.monitor.core import HealthThresholds, JobMonitor
from sclib.monitor.stats import percentile

__all__ = ["HealthThresholds", "JobMonitor", "percentile"]
