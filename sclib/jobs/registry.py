"""HandlerRegistry: which function runs which job type.

A handler is a callable taking one :class:`~sclib.jobs.context.JobContext` and
returning a JSON-serialisable result (or ``None``). It must be idempotent: a job may
run more than once after a crash (see ``docs/guarantees.md``).

For process mode, handlers must be importable module-level functions, since they
are sent to a fresh interpreter by reference.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any, Literal, overload

from sclib.errors import ConfigurationError, InvalidInput
from sclib.jobs.policy import RetryPolicy
from sclib.jobs.schedules import Missed, Schedule
from sclib.jobtypes import (
    JOB_TYPE_CONFIGS,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_NORMAL,
    JobTypeConfig,
    JobTypes,
)

__all__ = ["Handler", "HandlerRegistry", "load_object"]

Handler = Callable[[Any], Any]


def load_object(path: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"expected 'package.module:attribute', got {path!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f"module {module_name!r} has no attribute {attr!r}"
            ) from None
    return obj


Priority = int | Literal["high", "normal", "low"]
_PRIORITIES = {"high": PRIORITY_HIGH, "normal": PRIORITY_NORMAL, "low": PRIORITY_LOW}

#: a new job type's defaults when ``register`` is given none
DEFAULT_TIMEOUT = timedelta(minutes=60)
DEFAULT_ATTEMPTS = 3


class HandlerRegistry(Mapping[str, Handler]):
    """A mapping from job type to handler, filled with :meth:`register`.

    Registering a handler for a new type makes the type: a queue opened with the
    registry (``JobQueue.open(url, handlers=handlers)``) and a worker running it
    accept it, with the defaults below or the options given::

        handlers = HandlerRegistry()

        @handlers.register("thumbnail")               # 60 min, 3 attempts, normal
        def thumbnail(ctx):
            ...
            return {"ok": True}

        @handlers.register("fetch_metadata", timeout=120, max_attempts=5,
                           priority="high", retry=RetryPolicy(base_delay=1))
        def fetch(ctx):
            ...
    """

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = {}
        self._types: dict[str, JobTypeConfig] = {}
        self._schedules: dict[str, Schedule] = {}
        for job_type, fn in (handlers or {}).items():
            self.register(job_type, fn)
        if isinstance(handlers, HandlerRegistry):
            self._types.update(handlers._types)
            self._schedules.update(handlers._schedules)

    @overload
    def register(
        self,
        job_type: str,
        *,
        description: str | None = None,
        timeout: float | timedelta | None = None,
        max_attempts: int | None = None,
        priority: Priority | None = None,
        retry: RetryPolicy | None = None,
    ) -> Callable[[Handler], Handler]: ...
    @overload
    def register(
        self,
        job_type: str,
        fn: Handler,
        *,
        description: str | None = None,
        timeout: float | timedelta | None = None,
        max_attempts: int | None = None,
        priority: Priority | None = None,
        retry: RetryPolicy | None = None,
    ) -> Handler: ...

    def register(
        self,
        job_type: str,
        fn: Handler | None = None,
        *,
        description: str | None = None,
        timeout: float | timedelta | None = None,
        max_attempts: int | None = None,
        priority: Priority | None = None,
        retry: RetryPolicy | None = None,
    ) -> Handler | Callable[[Handler], Handler]:
        """Register ``fn`` for ``job_type``; usable as a decorator.

        A type that is not one of the seed's built-ins becomes a job type with
        these defaults: ``timeout`` 60 minutes (seconds, or a timedelta),
        ``max_attempts`` 3, ``priority`` normal (1/``"high"``, 2/``"normal"``,
        3/``"low"``), the queue's ``retry`` policy, and the handler's docstring
        as its ``description``. Options given for a built-in type replace its
        defaults in queues and workers that use this registry; a built-in
        registered without options keeps the seed's table.
        """
        if not isinstance(job_type, str) or not job_type:
            raise InvalidInput(f"job type must be a non-empty string, got {job_type!r}")
        options = {
            "description": description,
            "timeout": timeout,
            "max_attempts": max_attempts,
            "priority": priority,
            "retry": retry,
        }
        given = {k: v for k, v in options.items() if v is not None}
        # checked now, so a bad option fails at the decorator, not at enqueue
        base = JOB_TYPE_CONFIGS.get(job_type)
        config = None
        if given or base is None:
            config = _job_type_config(job_type, base, given)

        def add(handler: Handler) -> Handler:
            if not callable(handler):
                raise InvalidInput(f"handler for {job_type!r} is not callable")
            self._handlers[job_type] = handler
            if config is not None:
                if not config.description:
                    doc = (getattr(handler, "__doc__", None) or "").strip()
                    described = JobTypeConfig(
                        description=doc.splitlines()[0] if doc else job_type,
                        timeout_minutes=config.timeout_minutes,
                        max_attempts=config.max_attempts,
                        priority=config.priority,
                        retry=config.retry,
                    )
                    self._types[job_type] = described
                else:
                    self._types[job_type] = config
            else:
                self._types.pop(job_type, None)
            return handler

        return add if fn is None else add(fn)

    def schedule(
        self,
        name: str,
        cron: str,
        job_type: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        timezone: str = "UTC",
        missed: Missed = "latest",
        grace: float = 60.0,
        max_catchup: int = 100,
        priority: int | None = None,
        owner: str | None = None,
        dataset_uuid: str | None = None,
    ) -> Schedule:
        """Enqueue a ``job_type`` job on every tick of ``cron``, once per tick
        however many workers run this registry (:mod:`sclib.jobs.schedules`:
        time zones, and the ``missed`` policy for ticks missed while no worker
        ran). ``parameters`` gain ``scheduled_for``, the tick's time."""
        if name in self._schedules:
            raise InvalidInput(f"a schedule named {name!r} exists already")
        made = Schedule(
            name=name,
            cron=cron,
            job_type=job_type,
            parameters=dict(parameters or {}),
            timezone=timezone,
            missed=missed,
            grace=grace,
            max_catchup=max_catchup,
            priority=priority,
            owner=owner,
            dataset_uuid=dataset_uuid,
        )
        self._schedules[name] = made
        return made

    def periodic(
        self,
        job_type: str,
        cron: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        timezone: str = "UTC",
        missed: Missed = "latest",
        description: str | None = None,
        timeout: float | timedelta | None = None,
        max_attempts: int | None = None,
        priority: Priority | None = None,
        retry: RetryPolicy | None = None,
    ) -> Callable[[Handler], Handler]:
        """Decorator: register the handler for ``job_type`` (the options as in
        :meth:`register`) and a schedule of the same name that runs it on
        every tick of ``cron``."""
        add = self.register(
            job_type,
            description=description,
            timeout=timeout,
            max_attempts=max_attempts,
            priority=priority,
            retry=retry,
        )
        self._check_schedule_args(job_type, cron, timezone, missed)

        def decorate(handler: Handler) -> Handler:
            add(handler)
            self.schedule(
                job_type, cron, job_type, parameters, timezone=timezone, missed=missed
            )
            return handler

        return decorate

    @staticmethod
    def _check_schedule_args(name: str, cron: str, timezone: str, missed: str) -> None:
        """Fail at the decorator, not when the function is defined."""
        Schedule(name=name, cron=cron, job_type=name, timezone=timezone, missed=missed)  # type: ignore[arg-type]

    @property
    def schedules(self) -> Mapping[str, Schedule]:
        """The schedules declared on this registry, by name."""
        return dict(self._schedules)

    @property
    def job_types(self) -> Mapping[str, JobTypeConfig]:
        """The job types this registry defines or re-configures (new types, and
        built-ins registered with options); pass to :class:`~sclib.JobTypes`."""
        return dict(self._types)

    def merge(self, other: Mapping[str, Handler]) -> HandlerRegistry:
        """A new registry with this one's handlers, then ``other``'s."""
        merged = HandlerRegistry(self)
        for job_type, fn in other.items():
            merged.register(job_type, fn)
        if isinstance(other, HandlerRegistry):
            merged._types.update(other._types)
            merged._schedules.update(other._schedules)
        return merged

    @classmethod
    def load(cls, path: str) -> HandlerRegistry:
        """Load a registry (or a mapping of handlers) from ``module:attribute``."""
        obj = load_object(path)
        if callable(obj) and not isinstance(obj, Mapping):
            obj = obj()
        if not isinstance(obj, Mapping):
            raise ConfigurationError(
                f"{path!r} is not a HandlerRegistry or a mapping of job type to handler"
            )
        return obj if isinstance(obj, HandlerRegistry) else cls(obj)

    def __getitem__(self, job_type: str) -> Handler:
        return self._handlers[job_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)

    def __repr__(self) -> str:
        return f"HandlerRegistry({sorted(self._handlers)})"


def _job_type_config(
    job_type: str, base: JobTypeConfig | None, given: Mapping[str, Any]
) -> JobTypeConfig:
    """The config ``register`` options make, over ``base`` (a built-in) or the
    defaults; bad options raise InvalidInput naming the type."""
    timeout = given.get("timeout")
    if timeout is None:
        minutes = base.timeout_minutes if base else DEFAULT_TIMEOUT.total_seconds() / 60
    else:
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise InvalidInput(
                f"job type {job_type!r}: timeout must be seconds or a timedelta, "
                f"got {timeout!r}"
            )
        if seconds <= 0:
            raise InvalidInput(
                f"job type {job_type!r}: timeout must be positive, got {timeout!r}"
            )
        minutes = seconds / 60
    priority = given.get("priority")
    if isinstance(priority, str):
        if priority not in _PRIORITIES:
            raise InvalidInput(
                f"job type {job_type!r}: priority must be 'high', 'normal', 'low' "
                f"or 1-3, got {priority!r}"
            )
        priority = _PRIORITIES[priority]
    retry = given.get("retry")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise InvalidInput(
            f"job type {job_type!r}: retry must be a RetryPolicy, got {retry!r}"
        )
    if base is None:
        JobTypes().check_name(job_type)
    attempts = given.get("max_attempts")
    if attempts is None:
        attempts = base.max_attempts if base else DEFAULT_ATTEMPTS
    if priority is None:
        priority = base.priority if base else PRIORITY_NORMAL
    try:
        return JobTypeConfig(
            description=given.get("description") or (base.description if base else ""),
            timeout_minutes=minutes,
            max_attempts=attempts,
            priority=priority,
            requires_internet=base.requires_internet if base else False,
            estimated_duration=base.estimated_duration if base else "",
            retry=retry if retry is not None else (base.retry if base else None),
        )
    except InvalidInput as exc:
        raise InvalidInput(f"job type {job_type!r}: {exc}") from None
