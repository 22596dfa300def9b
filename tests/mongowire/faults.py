"""The fault schedule of the mongowire test server, and its counters.

Test infrastructure only (see :mod:`tests.mongowire`). A schedule is a list of
rules, set by any client with the server's own admin command::

    client.admin.command({
        "sclibFault": "set",
        "seed": 7,
        "rules": [
            {"kind": "close_after", "commands": ["findAndModify"],
             "collections": ["jobs"], "every": 5},
            {"kind": "not_writable_primary", "probability": 0.05, "limit": 40},
        ],
    })
    client.admin.command({"sclibFault": "stats"})   # counters
    client.admin.command({"sclibFault": "clear"})   # no rules, counters kept
    client.admin.command({"sclibFault": "reset"})   # no rules, counters zeroed

A rule matches a command by name (``commands``), collection (``collections``) and
database (``databases``); each left out matches all. Of the matching commands it
faults every ``every``-th, or each with ``probability`` (a ``random.Random`` seeded
with ``seed``), or all; at most ``limit`` times. The first rule that fires decides.

Kinds:

``close_before``
    close the connection without running the command.
``close_after``
    run the command (a retryable write is recorded), then close the connection
    without replying.
``not_writable_primary``, ``primary_stepped_down``, ``interrupted_at_shutdown``
    answer error 10107, 189 or 11600 without running the command, with the
    ``RetryableWriteError`` label on a retryable write (one with ``txnNumber``), as
    MongoDB 4.4+ does, and a newer ``topologyVersion``.
``error``
    the same with the rule's ``code`` (and ``labels``, if given).
``write_concern_error``
    run the write, then answer ``ok: 1`` with a ``writeConcernError`` (the rule's
    ``code``, default 64 WriteConcernFailed); for a retryable code on a retryable
    write the reply carries the ``RetryableWriteError`` label. Writes only.
``slow``
    wait ``delay_ms`` (default 200) before running the command.

The handshake (``hello``/``isMaster``), ``endSessions`` and ``sclibFault`` itself
are never faulted.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.mongowire.engine import WRITE_COMMANDS

#: kind -> the error code it answers with
ERROR_KINDS: dict[str, int] = {
    "not_writable_primary": 10107,
    "primary_stepped_down": 189,
    "interrupted_at_shutdown": 11600,
}
KINDS = frozenset(
    {"close_before", "close_after", "error", "write_concern_error", "slow"}
    | set(ERROR_KINDS)
)
#: never faulted
EXEMPT = frozenset({"hello", "ismaster", "endsessions", "sclibfault"})


class FaultSpecError(ValueError):
    """A rule the schedule cannot take."""


def _names(spec: Mapping[str, Any], key: str, lower: bool) -> frozenset[str] | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FaultSpecError(f"{key} must be a name or a list of names")
    return frozenset(v.lower() if lower else v for v in value)


@dataclass
class Rule:
    kind: str
    commands: frozenset[str] | None = None
    collections: frozenset[str] | None = None
    databases: frozenset[str] | None = None
    every: int | None = None
    probability: float | None = None
    limit: int | None = None
    code: int | None = None
    labels: tuple[str, ...] | None = None
    delay_ms: int = 200
    matched: int = 0
    fired: int = 0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Rule:
        kind = spec.get("kind")
        if kind not in KINDS:
            raise FaultSpecError(f"unknown fault kind {kind!r}; one of {sorted(KINDS)}")
        known = {
            "kind", "commands", "collections", "databases", "every", "probability",
            "limit", "code", "labels", "delay_ms",
        }  # fmt: skip
        if set(spec) - known:
            raise FaultSpecError(f"unknown rule fields {sorted(set(spec) - known)}")
        every = spec.get("every")
        if every is not None and (not isinstance(every, int) or every < 1):
            raise FaultSpecError("every must be a positive int")
        probability = spec.get("probability")
        if probability is not None and not 0 <= float(probability) <= 1:
            raise FaultSpecError("probability must be within [0, 1]")
        if kind == "error" and not isinstance(spec.get("code"), int):
            raise FaultSpecError("an 'error' rule needs an int code")
        labels = spec.get("labels")
        return cls(
            kind=kind,
            commands=_names(spec, "commands", lower=True),
            collections=_names(spec, "collections", lower=False),
            databases=_names(spec, "databases", lower=False),
            every=every,
            probability=None if probability is None else float(probability),
            limit=spec.get("limit"),
            code=spec.get("code"),
            labels=None if labels is None else tuple(labels),
            delay_ms=int(spec.get("delay_ms", 200)),
        )

    def matches(self, command: str, db: str, collection: str | None) -> bool:
        if self.kind == "write_concern_error" and command not in WRITE_COMMANDS:
            return False
        return (
            (self.commands is None or command in self.commands)
            and (self.databases is None or db in self.databases)
            and (self.collections is None or collection in self.collections)
        )


@dataclass
class Fault:
    """What to do to one command."""

    kind: str
    code: int | None = None
    labels: tuple[str, ...] | None = None
    delay_ms: int = 0


@dataclass
class FaultSchedule:
    """Rules and counters; thread-safe."""

    rules: list[Rule] = field(default_factory=list)
    commands: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    #: retryable writes answered from their record instead of run again
    replays: int = 0
    _rng: random.Random = field(default_factory=random.Random)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def configure(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Run a ``sclibFault`` command; return its reply body."""
        action = command.get("sclibFault")
        with self._lock:
            if action == "set":
                specs = command.get("rules") or []
                if not isinstance(specs, list):
                    raise FaultSpecError("rules must be a list")
                self.rules = [Rule.from_spec(s) for s in specs]
                self._rng = random.Random(command.get("seed", 0))
            elif action == "clear":
                self.rules = []
            elif action == "reset":
                self.rules = []
                self.commands.clear()
                self.faults.clear()
                self.replays = 0
            elif action != "stats":
                raise FaultSpecError(
                    f"sclibFault: unknown action {action!r} (set, clear, reset, stats)"
                )
            return self._stats()

    def _stats(self) -> dict[str, Any]:
        return {
            "commands": dict(self.commands),
            "commandsTotal": sum(self.commands.values()),
            "faults": dict(self.faults),
            "faultsTotal": sum(self.faults.values()),
            "replays": self.replays,
            "rules": [
                {"kind": r.kind, "matched": r.matched, "fired": r.fired}
                for r in self.rules
            ],
        }

    def count_replay(self) -> None:
        with self._lock:
            self.replays += 1

    def pick(self, command: str, db: str, collection: str | None) -> Fault | None:
        """Count one command; return the fault to inject into it, if any."""
        with self._lock:
            self.commands[command] += 1
            if command in EXEMPT:
                return None
            for rule in self.rules:
                if not rule.matches(command, db, collection):
                    continue
                if rule.limit is not None and rule.fired >= rule.limit:
                    continue
                rule.matched += 1
                if rule.every is not None:
                    fire = rule.matched % rule.every == 0
                elif rule.probability is not None:
                    fire = self._rng.random() < rule.probability
                else:
                    fire = True
                if not fire:
                    continue
                rule.fired += 1
                self.faults[rule.kind] += 1
                code = ERROR_KINDS.get(rule.kind, rule.code)
                return Fault(rule.kind, code, rule.labels, rule.delay_ms)
            return None
