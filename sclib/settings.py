"""Settings read from the environment: only the CLI, the server and workers use them.

The library itself takes explicit arguments; this module turns ``SCLIB_*``
variables, and the seed's names where they exist (``MONGO_URL``, ``DB_NAME``,
``VISUS_DATASETS``), into those arguments.
``docs/settings.md`` lists every variable.
"""

from __future__ import annotations

from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sclib.errors import ConfigurationError

__all__ = ["Settings", "load_settings", "parse_reserve"]


class Settings(BaseSettings):
    """Every environment variable sclib's command-line tools read."""

    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, populate_by_name=True
    )

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
    keep_finished_days: float = Field(
        default=30.0,
        ge=0,
        validation_alias=AliasChoices("SCLIB_KEEP_FINISHED_DAYS"),
    )
    log_format: Literal["text", "json"] = Field(
        default="text", validation_alias=AliasChoices("SCLIB_LOG_FORMAT")
    )
    worker_concurrency: int = Field(
        default=1,
        ge=1,
        le=1024,
        validation_alias=AliasChoices("SCLIB_WORKER_CONCURRENCY"),
    )
    worker_prefetch: Literal["auto"] | Annotated[int, Field(ge=0, le=10_000)] = Field(
        default="auto",
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

    # -- the server (sclib serve) ---------------------------------------------
    secret_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SCLIB_SECRET_KEY", "SECRET_KEY"),
        description="Signs HS256 tokens and seals credentials kept in job parameters.",
    )
    api_tokens: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SCLIB_API_TOKENS"),
        description=(
            "Static API tokens, as JSON: {token: email} or "
            "{token: {email: ..., roles: [...]}}."
        ),
    )
    jwks_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SCLIB_JWKS_URL"),
        description="JWKS address of an Auth0-style issuer (RS256/ES256 tokens).",
    )
    jwt_audience: str | None = Field(
        default=None, validation_alias=AliasChoices("SCLIB_JWT_AUDIENCE")
    )
    jwt_issuer: str | None = Field(
        default=None, validation_alias=AliasChoices("SCLIB_JWT_ISSUER")
    )
    jwt_email_claim: str = Field(
        default="email", validation_alias=AliasChoices("SCLIB_JWT_EMAIL_CLAIM")
    )
    jwt_roles_claim: str = Field(
        default="roles", validation_alias=AliasChoices("SCLIB_JWT_ROLES_CLAIM")
    )
    admin_role: str = Field(
        default="admin", validation_alias=AliasChoices("SCLIB_ADMIN_ROLE")
    )
    no_auth: bool = Field(
        default=False,
        validation_alias=AliasChoices("SCLIB_NO_AUTH"),
        description="Local development only: every request is the local user.",
    )
    cors_origins: str = Field(
        default="",
        validation_alias=AliasChoices("SCLIB_CORS_ORIGINS"),
        description="Comma-separated browser origins allowed to call the API.",
    )
    conversion_format: Literal["idx", "zarr"] = Field(
        default="idx",
        validation_alias=AliasChoices("SCLIB_CONVERSION_FORMAT"),
        description="Output format of dataset conversion: OpenVisus IDX or Zarr v3.",
    )
    backup_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SCLIB_BACKUP_URL"),
        description=(
            "Where backup_creation jobs copy datasets (a folder, s3:// or gs://); "
            "a job's own destination must lie inside it."
        ),
    )
    gdrive_service_account_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("SCLIB_GDRIVE_SERVICE_ACCOUNT_FILE"),
        description=(
            "A Google service-account key (JSON file) that google_sync jobs use "
            "when they carry no credentials of their own (the old system's auth dir)."
        ),
    )
    rsync_hosts: str = Field(
        default="",
        validation_alias=AliasChoices("SCLIB_RSYNC_HOSTS"),
        description="Comma-separated hosts rsync_transfer jobs may copy from.",
    )
    upload_expiry_hours: float = Field(
        default=24.0,
        gt=0,
        validation_alias=AliasChoices("SCLIB_UPLOAD_EXPIRY_HOURS"),
        description="Unfinished uploads untouched for this long are removed.",
    )
    max_upload_size: int = Field(
        default=10 * 1024**4,
        gt=0,
        validation_alias=AliasChoices("SCLIB_MAX_UPLOAD_SIZE"),
    )
    chunk_size: int = Field(
        default=100 * 1024**2,
        ge=1024,
        validation_alias=AliasChoices("SCLIB_CHUNK_SIZE"),
        description=(
            "Chunk size the large-file protocol hands out when the client names "
            "none: the original protocol's 100 MiB, which the original clients "
            "always send (sclib's client names its own, 32 MiB by default)."
        ),
    )
    max_chunk_size: int = Field(
        default=1024**3,
        ge=1024,
        validation_alias=AliasChoices("SCLIB_MAX_CHUNK_SIZE"),
        description="Largest chunk or tus PATCH body the server accepts.",
    )
    disk_reserve: str = Field(
        default="1GiB",
        validation_alias=AliasChoices("SCLIB_DISK_RESERVE"),
        description=(
            "Free space kept on the data folder's disk: a size (1GiB) or a share "
            "of the disk (5%). New uploads that would eat into it are refused "
            "(507), so the job database and cancellations keep working when the "
            "disk fills."
        ),
    )
    max_open_uploads: int = Field(
        default=1000,
        ge=1,
        validation_alias=AliasChoices("SCLIB_MAX_OPEN_UPLOADS"),
        description="Unfinished uploads one user may hold at once (then 429).",
    )
    max_staged_bytes: int = Field(
        default=10 * 1024**4,
        ge=0,
        validation_alias=AliasChoices("SCLIB_MAX_STAGED_BYTES"),
        description=(
            "Bytes one user's unfinished uploads may declare in all (then 429)."
        ),
    )
    max_buffered_bytes: int = Field(
        default=256 * 1024**2,
        ge=1024**2,
        validation_alias=AliasChoices("SCLIB_MAX_BUFFERED_BYTES"),
        description=(
            "Bytes of request bodies one server process holds in memory at once; "
            "past it, new bodies wait (their bytes stay in the network)."
        ),
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=4096,
        le=16 * 1024**2,
        validation_alias=AliasChoices("SCLIB_MAX_HEADER_BYTES"),
        description="Largest request head (request line and headers); then 431.",
    )
    max_headers: int = Field(
        default=100,
        ge=10,
        le=10_000,
        validation_alias=AliasChoices("SCLIB_MAX_HEADERS"),
        description="Most header fields in one request; then 431.",
    )
    data_plane: bool = Field(
        default=True,
        validation_alias=AliasChoices("SCLIB_DATA_PLANE"),
        description=(
            "Read the bodies of tus PATCH and raw chunk requests straight from the "
            "socket (sclib.server.dataplane); false: through ASGI like every other "
            "request. Needs httptools (the server extra)."
        ),
    )
    direct_io: bool = Field(
        default=False,
        validation_alias=AliasChoices("SCLIB_DIRECT_IO"),
        description=(
            "Write the page-aligned pieces the data plane reads past the page "
            "cache (O_DIRECT, Linux): no uploaded bytes crowding the page cache, "
            "and much less CPU where filling it is dear, but only as fast as the "
            "disk takes them (docs/server.md). Filesystems that refuse O_DIRECT "
            "are written through the page cache either way."
        ),
    )
    max_metadata_bytes: int = Field(
        default=4096,
        ge=256,
        le=1024**2,
        validation_alias=AliasChoices("SCLIB_MAX_UPLOAD_METADATA"),
        description="Largest tus Upload-Metadata header value; then 400.",
    )
    standard_upload_limit: int = Field(
        default=100 * 1024**2,
        gt=0,
        validation_alias=AliasChoices("SCLIB_STANDARD_UPLOAD_LIMIT"),
        description="Files up to this size go in one request ('standard').",
    )
    upload_path_roots: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SCLIB_UPLOAD_PATH_ROOTS"),
        description=(
            "os.pathsep-separated folders the server-path upload route may read; "
            "unset turns the route off."
        ),
    )
    user_job_types: str = Field(
        default="",
        validation_alias=AliasChoices("SCLIB_USER_JOB_TYPES"),
        description=(
            "Comma-separated job types non-admin users may submit through "
            "/api/v1/jobs (admins may submit any)."
        ),
    )
    import_endpoints: str = Field(
        default="",
        validation_alias=AliasChoices("SCLIB_IMPORT_ENDPOINTS"),
        description=(
            "Comma-separated S3/GCS endpoint URLs users may import from "
            "(admins may name any)."
        ),
    )
    allow_private_addresses: bool = Field(
        default=False,
        validation_alias=AliasChoices("SCLIB_ALLOW_PRIVATE_ADDRESSES"),
        description="Let URL imports reach loopback and private addresses.",
    )
    trusted_clients: str = Field(
        default="",
        validation_alias=AliasChoices("SCLIB_TRUSTED_CLIENTS"),
        description=(
            "Comma-separated addresses or CIDR blocks (e.g. 10.0.0.5,10.1.0.0/16) "
            "of servers that authenticate users themselves, as the original "
            "portal did: their requests need no token and name the user in "
            "user_email. Empty (the default) turns this off."
        ),
    )
    credentials_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("SCLIB_CREDENTIALS_DIR"),
        description=(
            "A folder of Google service-account key files that Google Drive "
            "imports may name by path (source_config.service_account_file), as "
            "the original deployment's auth folder; unset refuses paths."
        ),
    )
    metrics_public: bool = Field(
        default=False,
        validation_alias=AliasChoices("SCLIB_METRICS_PUBLIC"),
        description="Serve /metrics without a token (else it needs an admin one).",
    )

    @property
    def keep_finished(self) -> timedelta | None:
        """How long workers keep finished jobs; ``None``: forever."""
        days = self.keep_finished_days
        return timedelta(days=days) if days > 0 else None

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Settings that each pass but cannot work together stop at start-up,
        with one line naming both."""
        problems = []
        if self.chunk_size > self.max_chunk_size:
            problems.append(
                f"SCLIB_CHUNK_SIZE ({self.chunk_size}) is above SCLIB_MAX_CHUNK_SIZE "
                f"({self.max_chunk_size}): every chunked upload would be refused"
            )
        if self.grace_period > 0 and self.lease_seconds < 2:
            problems.append(
                f"SCLIB_LEASE_SECONDS ({self.lease_seconds:g}) leaves no time for a "
                "heartbeat; use 2 or more"
            )
        parse_reserve(self.disk_reserve)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "worker_mode", "mongo_write_concern", "conversion_format", mode="before"
    )
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    def trusted_networks(self) -> list[IPv4Network | IPv6Network]:
        """:attr:`trusted_clients` as networks (one address: a /32 or /128)."""
        from ipaddress import ip_network

        networks = []
        for item in self.trusted_clients.split(","):
            if item.strip():
                try:
                    networks.append(ip_network(item.strip(), strict=False))
                except ValueError:
                    raise ConfigurationError(
                        f"SCLIB_TRUSTED_CLIENTS: {item.strip()!r} is not an address "
                        "or CIDR block (e.g. 10.0.0.5 or 10.1.0.0/16)"
                    ) from None
        return networks

    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    def user_job_type_list(self) -> list[str]:
        return [t.strip() for t in self.user_job_types.split(",") if t.strip()]

    def rsync_host_list(self) -> list[str]:
        return [h.strip() for h in self.rsync_hosts.split(",") if h.strip()]

    def import_endpoint_list(self) -> list[str]:
        return [
            e.strip().rstrip("/") for e in self.import_endpoints.split(",") if e.strip()
        ]

    def upload_path_root_list(self) -> list[Path]:
        if not self.upload_path_roots:
            return []
        import os

        return [Path(p) for p in self.upload_path_roots.split(os.pathsep) if p]

    def backend_url(self) -> str:
        """The job store URL these settings select."""
        if self.backend:
            return self.backend
        if self.mongo_url:
            return self.mongo_url
        # an absolute path after 'sqlite:///' gives the four-slash absolute form
        return "sqlite:///" + str((self.data_dir / "sclib.db").resolve())

    def session_store_options(self, url: str) -> dict[str, object]:
        """Constructor options for the session and dataset stores beside the job
        store: on MongoDB, the database and the same write concern as the jobs
        (``SCLIB_MONGO_WRITE_CONCERN`` governs every MongoDB write sclib makes)."""
        if url.startswith("sqlite:"):
            return {}
        options: dict[str, object] = {"write_concern": self.mongo_write_options()}
        if not urlsplit(url).path.strip("/"):
            options["database"] = self.db_name
        return options

    def mongo_write_options(self) -> dict[str, object]:
        """``SCLIB_MONGO_WRITE_CONCERN`` as pymongo's write concern options."""
        if self.mongo_write_concern == "majority":
            return {"w": "majority", "j": True}
        return {"w": 1}

    def store_options(self, url: str) -> dict[str, object]:
        """Constructor options for the store at ``url``."""
        if url.startswith("sqlite:"):
            return {"synchronous": self.sqlite_synchronous}
        options: dict[str, object] = {
            "collection": self.jobs_collection,
            "write_concern": self.mongo_write_options(),
        }
        if not urlsplit(url).path.strip("/"):
            options["database"] = self.db_name
        return options


def parse_reserve(text: str) -> tuple[int, float]:
    """``SCLIB_DISK_RESERVE`` as ``(bytes, share of the disk)``: ``"1GiB"`` is
    ``(1073741824, 0.0)``, ``"5%"`` is ``(0, 0.05)``."""
    value = text.strip()
    if value.endswith("%"):
        try:
            share = float(value[:-1]) / 100
        except ValueError:
            share = -1.0
        if not 0 <= share < 0.9:
            raise ValueError(
                f"SCLIB_DISK_RESERVE: {text!r} is not a share of the disk (0% to 90%)"
            )
        return 0, share
    import re

    match = re.fullmatch(r"(\d+)\s*([KMGT]?)(I?B)?", value.upper())
    if match is None:
        raise ValueError(
            f"SCLIB_DISK_RESERVE: {text!r} is not a size (1GiB, 500MiB, bytes) or a "
            "share of the disk (5%)"
        )
    power = " KMGT".index(match.group(2) or " ")
    return int(match.group(1)) * 1024**power, 0.0


def load_settings(**overrides: object) -> Settings:
    """Read the environment; raise :class:`ConfigurationError` with what is wrong."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            (f"{'.'.join(str(p) for p in err['loc'])}: " if err["loc"] else "")
            + str(err["msg"]).removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid sclib settings: {problems}") from None
