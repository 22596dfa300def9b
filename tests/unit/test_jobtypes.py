"""Job types, statuses and the legacy dataset status table."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sclib import (
    DatasetStatus,
    InvalidInput,
    InvalidTransition,
    JobStatus,
    JobType,
    JobTypeConfig,
    JobTypes,
    UnknownJobType,
    check_transition,
    dataset_status_for,
)
from sclib.jobtypes import DATASET_TRANSITIONS, JOB_TYPE_CONFIGS, dataset_status_trail


def test_seed_job_types_and_statuses() -> None:
    """The seed's nine job types and five job statuses, by their exact names."""
    assert {t.value for t in JobType} == {
        "google_sync",
        "dataset_conversion",
        "file_upload",
        "file_extraction",
        "data_compression",
        "rsync_transfer",
        "backup_creation",
        "data_validation",
        "upload",
    }
    assert [s.value for s in JobStatus] == [
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]
    assert set(JOB_TYPE_CONFIGS) == set(JobType)


def test_dataset_conversion_config_matches_seed() -> None:
    """The seed's table: conversion has 120 min, 2 attempts, priority 1."""
    conf = JOB_TYPE_CONFIGS[JobType.DATASET_CONVERSION]
    assert (conf.timeout_minutes, conf.max_attempts, conf.priority) == (120, 2, 1)
    assert conf.description == "Convert dataset to streamable format"
    assert all(c.priority in (1, 2, 3) for c in JOB_TYPE_CONFIGS.values())


def test_seventeen_legacy_statuses_with_spaces() -> None:
    """All 17 legacy strings exist, spaces included, and each has a table row."""
    values = [s.value for s in DatasetStatus]
    assert len(values) == 17
    assert {
        "conversion queued",
        "sync queued",
        "upload queued",
        "sync error",
        "conversion error",
        "upload error",
    } <= set(values)
    assert set(DATASET_TRANSITIONS) == set(DatasetStatus)


@pytest.mark.parametrize(
    "path",
    [
        [
            "submitted",
            "sync queued",
            "syncing",
            "conversion queued",
            "converting",
            "done",
        ],
        ["submitted", "upload queued", "uploading", "done"],
        ["submitted", "unzipping", "conversion queued", "converting", "done"],
    ],
)
def test_seed_pipelines_are_allowed(path: list[str]) -> None:
    """The three status sequences the seed documents are valid transitions."""
    for old, new in pairwise(path):
        assert check_transition(old, new).value == new


def test_forbidden_transition_names_both_ends() -> None:
    """A jump the table forbids is refused with both statuses and the options."""
    with pytest.raises(InvalidTransition, match="'done' cannot go to 'converting'"):
        check_transition("done", "converting")
    with pytest.raises(InvalidInput, match="'conversion failed' is not a dataset"):
        check_transition("converting", "conversion failed")


@given(st.sampled_from(list(DatasetStatus)), st.sampled_from(list(DatasetStatus)))
def test_transition_check_agrees_with_table(
    old: DatasetStatus, new: DatasetStatus
) -> None:
    """check_transition accepts exactly the table's pairs plus staying put."""
    allowed = new is old or new in DATASET_TRANSITIONS[old]
    if allowed:
        assert check_transition(old.value, new.value) is new
    else:
        with pytest.raises(InvalidTransition):
            check_transition(old.value, new.value)


@given(st.sampled_from(list(DatasetStatus)))
def test_every_status_can_reach_done(start: DatasetStatus) -> None:
    """No status is a dead end: done is reachable from each one."""
    seen, todo = {start}, [start]
    while todo:
        for nxt in DATASET_TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert DatasetStatus.DONE in seen or start is DatasetStatus.DONE


def test_dataset_status_for_jobs() -> None:
    """A job's state maps to the legacy dataset status the portal shows."""
    assert (
        dataset_status_for("dataset_conversion", "pending")
        is DatasetStatus.CONVERSION_QUEUED
    )
    assert (
        dataset_status_for("dataset_conversion", "running") is DatasetStatus.CONVERTING
    )
    assert (
        dataset_status_for("dataset_conversion", "failed")
        is DatasetStatus.CONVERSION_ERROR
    )
    assert (
        dataset_status_for("google_sync", "pending", retrying=True)
        is DatasetStatus.RETRYING
    )
    assert dataset_status_for("upload", "running") is DatasetStatus.UPLOADING
    assert dataset_status_for("data_validation", "running") is None
    assert dataset_status_for("upload", "completed") is None


def test_job_types_catalogue_is_per_instance() -> None:
    """Registering a type on one catalogue leaves others (and the defaults) alone."""
    mine = JobTypes()
    mine.register("new_job_type", JobTypeConfig("New job type", 30, 3, 2))
    assert mine.require("new_job_type").timeout_seconds == 1800
    with pytest.raises(UnknownJobType, match="known types: backup_creation"):
        JobTypes().require("new_job_type")
    with pytest.raises(InvalidInput, match="letters, digits"):
        mine.register("bad name!", JobTypeConfig("x", 1, 1, 1))
    with pytest.raises(InvalidInput, match="priority"):
        JobTypeConfig("x", 1, 1, 0)
    with pytest.raises(InvalidInput, match="max_attempts"):
        JobTypeConfig("x", 1, 0, 1)


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        ([], "submitted"),
        ([("upload", "pending", 0)], "upload queued"),
        ([("upload", "running", 0)], "uploading"),
        ([("upload", "completed", 0), ("file_extraction", "running", 0)], "unzipping"),
        (
            [
                ("upload", "completed", 0),
                ("file_extraction", "completed", 0),
                ("dataset_conversion", "completed", 0),
            ],
            "done",
        ),
        (
            [("google_sync", "completed", 0), ("dataset_conversion", "pending", 0)],
            "conversion queued",
        ),
        ([("dataset_conversion", "pending", 1)], "retrying"),
        ([("dataset_conversion", "failed", 2)], "conversion error"),
        ([("upload", "completed", 0), ("data_validation", "running", 0)], "done"),
        ([("upload", "cancelled", 0)], "submitted"),
        (
            [
                ("dataset_conversion", "completed", 0),
                ("data_compression", "running", 0),
            ],
            "zipping",
        ),
    ],
)
def test_dataset_status_trail_derives_legacy_status(
    jobs: list[tuple[str, str, int]], expected: str
) -> None:
    """A dataset's jobs, in order, give the legacy status the portal shows."""
    assert dataset_status_trail(jobs)[-1].value == expected


@given(
    st.lists(
        st.tuples(
            st.sampled_from([t.value for t in JobType]),
            st.sampled_from([s.value for s in JobStatus]),
            st.integers(min_value=0, max_value=3),
        ),
        max_size=8,
    )
)
def test_every_job_history_has_a_legal_status_trail(
    jobs: list[tuple[str, str, int]],
) -> None:
    """The transition table covers every order of jobs the queue can hold.

    dataset_status_trail checks each step with check_transition, so this fails as
    soon as an edit to the table or to the job-type mapping leaves a gap.
    """
    trail = dataset_status_trail(jobs)
    assert trail[0] is DatasetStatus.SUBMITTED
    for old, new in pairwise(trail):
        assert new in DATASET_TRANSITIONS[old]
