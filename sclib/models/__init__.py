"""Plain data objects, the bottom of the package: jobs (:mod:`sclib.models.job`)
and datasets (:mod:`sclib.models.dataset`). They import nothing of sclib but the
errors, the job and status vocabulary (:mod:`sclib.jobtypes`) and path checks.
"""

from __future__ import annotations

from sclib.models.job import (
    JSON,
    ErrorRecord,
    Job,
    JobEvent,
    Lease,
    Progress,
    from_timestamp,
    new_job_id,
    to_timestamp,
)

__all__ = [
    "JSON",
    "ErrorRecord",
    "Job",
    "JobEvent",
    "Lease",
    "Progress",
    "from_timestamp",
    "new_job_id",
    "to_timestamp",
]
