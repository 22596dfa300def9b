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
from typing import Any, overload

from sclib.errors import ConfigurationError, InvalidInput

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


class HandlerRegistry(Mapping[str, Handler]):
    """A mapping from job type to handler, filled with :meth:`register`.

    ::

        handlers = HandlerRegistry()

        @handlers.register("data_validation")
        def validate(ctx):
            ...
            return {"ok": True}
    """

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = {}
        for job_type, fn in (handlers or {}).items():
            self.register(job_type, fn)

    @overload
    def register(self, job_type: str) -> Callable[[Handler], Handler]: ...
    @overload
    def register(self, job_type: str, fn: Handler) -> Handler: ...

    def register(
        self, job_type: str, fn: Handler | None = None
    ) -> Handler | Callable[[Handler], Handler]:
        """Register ``fn`` for ``job_type``; usable as a decorator."""
        if not isinstance(job_type, str) or not job_type:
            raise InvalidInput(f"job type must be a non-empty string, got {job_type!r}")

        def add(handler: Handler) -> Handler:
            if not callable(handler):
                raise InvalidInput(f"handler for {job_type!r} is not callable")
            self._handlers[job_type] = handler
            return handler

        return add if fn is None else add(fn)

    def merge(self, other: Mapping[str, Handler]) -> HandlerRegistry:
        """A new registry with this one's handlers, then ``other``'s."""
        merged = HandlerRegistry(self)
        for job_type, fn in other.items():
            merged.register(job_type, fn)
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
