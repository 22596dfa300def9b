"""The plain data objects: the fast builder of jobs the stores use."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sclib.jobtypes import JobStatus
from sclib.models import ErrorRecord, Job, Progress
from sclib.models.job import JOB_FIELDS, build_job

_times = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.just(UTC),
)
_maybe_text = st.none() | st.text(min_size=1, max_size=8)


@st.composite
def _jobs(draw: st.DrawFn) -> Job:
    return Job(
        id=draw(st.text(min_size=1, max_size=32)),
        type=draw(st.sampled_from(["upload", "conversion", "noop"])),
        status=draw(st.sampled_from(list(JobStatus))),
        priority=draw(st.integers(1, 5)),
        parameters=draw(st.dictionaries(st.text(max_size=4), st.integers())),
        dataset_uuid=draw(_maybe_text),
        owner=draw(_maybe_text),
        attempts=draw(st.integers(0, 9)),
        max_attempts=draw(st.integers(1, 9)),
        failures=draw(st.integers(0, 9)),
        crashes=draw(st.integers(0, 9)),
        max_crashes=draw(st.integers(1, 9)),
        timeout_seconds=draw(st.floats(0.1, 1e6)),
        run_at=draw(_times),
        worker_id=draw(_maybe_text),
        lease_until=draw(st.none() | _times),
        cancel_requested=draw(st.booleans()),
        progress=Progress(),
        result=draw(st.none() | st.integers()),
        error=draw(_maybe_text),
        error_history=tuple(
            ErrorRecord("transient", m, draw(_times))
            for m in draw(st.lists(st.text(max_size=5), max_size=2))
        ),
        idempotency_key=draw(_maybe_text),
        depends_on=tuple(draw(st.lists(st.text(min_size=1, max_size=4), max_size=3))),
        waiting_on=draw(st.integers(0, 3)),
        created_at=draw(_times),
        updated_at=draw(_times),
        started_at=draw(st.none() | _times),
        finished_at=draw(st.none() | _times),
    )


@given(_jobs())
def test_build_job_makes_the_job_the_constructor_makes(job: Job) -> None:
    """``build_job`` (what the SQLite store and enqueue_many use to skip the
    frozen constructor's cost) sets every field: its job equals, hashes and
    prints like the constructor's, and stays frozen."""
    values = [getattr(job, name) for name in JOB_FIELDS]
    built = build_job(*values)
    assert built == job == Job(*values)
    assert repr(built) == repr(job)
    assert [getattr(built, f.name) for f in dataclasses.fields(Job)] == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.status = JobStatus.COMPLETED  # type: ignore[misc]
    assert dataclasses.replace(built, attempts=job.attempts + 1).attempts == (
        job.attempts + 1
    )


def test_build_job_needs_every_field() -> None:
    """It checks nothing, but a missing value is still an error, not a job with
    a field unset."""
    now = datetime.now(UTC)
    values: list[Any] = [
        getattr(Job("a", "noop", JobStatus.PENDING, 3), n) for n in JOB_FIELDS
    ]
    values[-1] = now - timedelta(seconds=1)
    assert build_job(*values).finished_at == values[-1]
    with pytest.raises(TypeError):
        build_job(*values[:-1])
