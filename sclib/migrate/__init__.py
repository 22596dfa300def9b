"""Moving datasets of the old status-based system onto the queue.

:mod:`sclib.migrate.core` runs a migration (:class:`Migrator`: plan, apply,
validate, roll back), :mod:`sclib.migrate.plan` holds its pure pieces (the status
to job table, clashes, reports, export files) and :mod:`sclib.migrate.store` reads
the legacy documents and keeps the ledger of originals. See ``docs/operations.md``.
"""

from __future__ import annotations

from sclib.migrate.core import (
    STATUS_JOBS,
    Clash,
    MigrationItem,
    MigrationReport,
    Migrator,
    RollbackItem,
    RollbackReport,
    ValidationItem,
    ValidationReport,
    load_legacy_file,
)

__all__ = [
    "STATUS_JOBS",
    "Clash",
    "MigrationItem",
    "MigrationReport",
    "Migrator",
    "RollbackItem",
    "RollbackReport",
    "ValidationItem",
    "ValidationReport",
    "load_legacy_file",
]
