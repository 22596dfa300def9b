"""The job queue: policy (:mod:`.queue`), workers (:mod:`.worker`), handlers."""

from __future__ import annotations

from sclib.jobs.context import JobContext
from sclib.jobs.policy import RetryPolicies, RetryPolicy
from sclib.jobs.queue import JobQueue
from sclib.jobs.registry import HandlerRegistry
from sclib.jobs.worker import Worker, WorkerStats

__all__ = [
    "HandlerRegistry",
    "JobContext",
    "JobQueue",
    "RetryPolicies",
    "RetryPolicy",
    "Worker",
    "WorkerStats",
]
