"""Settings read from the environment: only the CLI, the server and workers use them.

The library itself takes explicit arguments; this module turns ``SCLIB_*``
variables, and the seed's names where they exist (``MONGO_URL``, ``DB_NAME``,
``VISUS_DATASETS``), into those arguments.
``docs/settings.md`` lists every variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sclib.errors import ConfigurationError

__all__ = ["Settings", "load_settings"]


class Settings(BaseSettings):
    """Every environment variable sclib's command-line tools read."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    data_dir: Path = Field(
        default=Path("sclib-data"),
        validation_alias=AliasChoices("SCLIB_DATA_DIR", "VISUS_DATASETS"),
        description="Root folder for data and the embedded job database.",
    )
    backend: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SCLIB_BACKEND"),
        description="Job store URL; default: sqlite in data_dir, or MONGO_URL if set.",
    )
    mongo_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SCLIB_MONGO_URL", "MONGO_URL")
    )
    db_name: str = Field(
        default="scientistcloud",
        validation_alias=AliasChoices("SCLIB_DB_NAME", "DB_NAME"),
    )
    jobs_collection: str = Field(
        default="jobs", validation_alias=AliasChoices("SCLIB_JOBS_COLLECTION")
    )
    mongo_write_concern: Literal["majority", "1"] = Field(
        default="majority", validation_alias=AliasChoices("SCLIB_MONGO_WRITE_CONCERN")
    )
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL", validation_alias=AliasChoices("SCLIB_SQLITE_SYNCHRONOUS")
    )
    worker_concurrency: int = Field(
        default=1,
        ge=1,
        le=1024,
        validation_alias=AliasChoices("SCLIB_WORKER_CONCURRENCY"),
    )
    worker_prefetch: int = Field(
        default=0,
        ge=0,
        le=10_000,
        validation_alias=AliasChoices("SCLIB_WORKER_PREFETCH"),
    )
    worker_mode: Literal["thread", "process"] = Field(
        default="thread", validation_alias=AliasChoices("SCLIB_WORKER_MODE")
    )
    lease_seconds: float = Field(
        default=30.0, gt=0, validation_alias=AliasChoices("SCLIB_LEASE_SECONDS")
    )
    poll_interval: float = Field(
        default=1.0, gt=0, validation_alias=AliasChoices("SCLIB_POLL_INTERVAL")
    )
    grace_period: float = Field(
        default=30.0, ge=0, validation_alias=AliasChoices("SCLIB_GRACE_PERIOD")
    )
    max_crashes: int = Field(
        default=3, ge=1, validation_alias=AliasChoices("SCLIB_MAX_CRASHES")
    )
    handlers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SCLIB_HANDLERS"),
        description="Comma-separated 'module:attribute' handler registries to load.",
    )

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("worker_mode", "mongo_write_concern", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    def backend_url(self) -> str:
        """The job store URL these settings select."""
        if self.backend:
            return self.backend
        if self.mongo_url:
            return self.mongo_url
        # an absolute path after 'sqlite:///' gives the four-slash absolute form
        return "sqlite:///" + str((self.data_dir / "sclib.db").resolve())

    def store_options(self, url: str) -> dict[str, object]:
        """Constructor options for the store at ``url``."""
        if url.startswith("sqlite:"):
            return {"synchronous": self.sqlite_synchronous}
        wc: dict[str, object] = (
            {"w": "majority", "j": True}
            if self.mongo_write_concern == "majority"
            else {"w": 1}
        )
        options: dict[str, object] = {
            "collection": self.jobs_collection,
            "write_concern": wc,
        }
        if not urlsplit(url).path.strip("/"):
            options["database"] = self.db_name
        return options


def load_settings(**overrides: object) -> Settings:
    """Read the environment; raise :class:`ConfigurationError` with what is wrong."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid sclib settings: {problems}") from None
