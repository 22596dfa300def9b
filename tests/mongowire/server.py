"""The mongowire TCP server: connections, handshake, retryable writes, faults.

Test infrastructure only (see :mod:`tests.mongowire`). One thread per connection
reads requests (OP_MSG, or the legacy OP_QUERY a driver may open with), and every
command that touches data runs under one lock against the :class:`Engine`, so
each command is atomic as on a real server and concurrent clients are safe.

The server presents itself as the primary of a one-member replica set ``rs0``
(MongoDB 6.0, maxWireVersion 17) with logical sessions, so pymongo uses implicit
sessions and retryable writes. A retryable write (``insert``, ``update``,
``delete``, ``findAndModify`` with ``lsid`` and ``txnNumber``) that was applied is
recorded with its reply; the same ``(lsid, txnNumber)`` sent again gets the
recorded reply and is not applied again, as on a real server.

Awaitable ``hello`` (the driver's streaming monitor, with ``topologyVersion`` and
``maxAwaitTimeMS``) is answered when the topology changes or the wait runs out,
like a real server. After a fault that makes the driver mark the server Unknown,
the pending awaitable hellos are also answered a few milliseconds later: the
driver then finds the primary again at once, instead of after its 500 ms
cancellation poll, which keeps fault tests fast.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.int64 import Int64
from bson.timestamp import Timestamp

from tests.mongowire import wire
from tests.mongowire.engine import (
    RETRYABLE_WRITE_CODES,
    RETRYABLE_WRITES,
    WRITE_COMMANDS,
    Engine,
    error_reply,
)
from tests.mongowire.faults import ERROR_KINDS, Fault, FaultSchedule, FaultSpecError

__all__ = ["MAX_WIRE_VERSION", "SET_NAME", "MongoWireServer"]

SET_NAME = "rs0"
MAX_WIRE_VERSION = 17  # MongoDB 6.0
SERVER_VERSION = "6.0.99-mongowire"
#: how many retryable-write records are kept (oldest dropped first)
MAX_RECORDS = 200_000

_CLOSE = object()
#: the codes on which a driver marks the server Unknown ("not primary", "node is
#: recovering" and "shutting down" in the SDAM spec)
STATE_CHANGE_CODES = frozenset({91, 189, 10058, 10107, 11600, 11602, 13435, 13436})
_TRANSACTIONS = frozenset({"committransaction", "aborttransaction"})


class _Connection:
    def __init__(self, sock: socket.socket, conn_id: int, peer: str) -> None:
        self.sock = sock
        self.id = conn_id
        self.peer = peer
        self.thread: threading.Thread | None = None


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        try:
            chunk = sock.recv(min(n, 1 << 20))
        except OSError:
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class MongoWireServer:
    """A MongoDB wire-protocol server on ``127.0.0.1`` over mongomock."""

    def __init__(self, port: int = 0) -> None:
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.engine = Engine()
        self.schedule = FaultSchedule()
        #: every command that reads or writes data runs under this lock
        self.lock = threading.Lock()
        self._records: OrderedDict[tuple[bytes, int], dict[str, Any]] = OrderedDict()
        self._process_id = ObjectId()
        self._counter = 0
        self._wakes = 0
        self._topology = threading.Condition()
        self._stopped = threading.Event()
        self._connections: dict[int, _Connection] = {}
        self._conn_lock = threading.Lock()
        self._next_conn_id = 0
        self._accept_thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> MongoWireServer:
        self._accept_thread = threading.Thread(
            target=self._accept, name="mongowire-accept", daemon=True
        )
        self._accept_thread.start()
        return self

    def serve_forever(self) -> None:
        self.start()
        self._stopped.wait()

    def stop(self) -> None:
        self._stopped.set()
        # shutdown wakes the thread blocked in accept(); close alone does not
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._topology:
            self._topology.notify_all()
        with self._conn_lock:
            conns = list(self._connections.values())
        for conn in conns:
            self._close(conn)
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        for conn in conns:
            if (
                conn.thread is not None
                and conn.thread is not threading.current_thread()
            ):
                conn.thread.join(timeout=5)

    def __enter__(self) -> MongoWireServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def uri(self) -> str:
        return f"mongodb://{self.address}/?replicaSet={SET_NAME}"

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, peer = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._conn_lock:
                self._next_conn_id += 1
                conn = _Connection(sock, self._next_conn_id, f"{peer[0]}:{peer[1]}")
                self._connections[conn.id] = conn
                conn.thread = threading.Thread(
                    target=self._serve, args=(conn,), name="mongowire-conn", daemon=True
                )
            conn.thread.start()

    def _close(self, conn: _Connection) -> None:
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)
        conn.sock.close()

    def _serve(self, conn: _Connection) -> None:
        try:
            while not self._stopped.is_set():
                header = _recv_exact(conn.sock, 16)
                if header is None:
                    return
                length, request_id, _, op_code = wire.parse_header(header)
                rest = _recv_exact(conn.sock, length - 16)
                if rest is None:
                    return
                if op_code == wire.OP_MSG:
                    request = wire.parse_op_msg(header + rest)
                elif op_code == wire.OP_QUERY:
                    request = wire.parse_op_query(header + rest)
                else:
                    return  # OP_COMPRESSED is never negotiated; nothing else is valid
                reply = self.handle(request, conn)
                if reply is _CLOSE:
                    return
                if not request.wants_reply:
                    continue
                assert isinstance(reply, dict)
                if op_code == wire.OP_QUERY:
                    data = wire.encode_op_reply(request_id, 0, reply)
                else:
                    data = wire.encode_op_msg(request_id, 0, reply)
                conn.sock.sendall(data)
        except (OSError, wire.ProtocolError):
            return
        finally:
            with self._conn_lock:
                self._connections.pop(conn.id, None)
            self._close(conn)

    # -- topology ------------------------------------------------------------

    def _topology_version(self) -> dict[str, Any]:
        return {"processId": self._process_id, "counter": Int64(self._counter)}

    def _step(self) -> dict[str, Any]:
        """A state change (step-down, shutdown): a newer topologyVersion, and the
        awaitable hellos are answered with it."""
        with self._topology:
            self._counter += 1
            self._topology.notify_all()
            return self._topology_version()

    def _wake_soon(self) -> None:
        """Answer the pending awaitable hellos shortly (see the module doc)."""
        for delay in (0.01, 0.15):
            timer = threading.Timer(delay, self._wake)
            timer.daemon = True
            timer.start()

    def _wake(self) -> None:
        with self._topology:
            self._wakes += 1
            self._topology.notify_all()

    def _hello(self, cmd: dict[str, Any], legacy: bool, conn: _Connection) -> Any:
        tv = cmd.get("topologyVersion")
        wait_ms = cmd.get("maxAwaitTimeMS")
        if isinstance(tv, dict) and wait_ms is not None:
            deadline = time.monotonic() + int(wait_ms) / 1000
            with self._topology:
                wakes = self._wakes
                while (
                    tv.get("processId") == self._process_id
                    and tv.get("counter") == self._counter
                    and wakes == self._wakes
                    and not self._stopped.is_set()
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._topology.wait(left)
            if self._stopped.is_set():
                return _CLOSE
        now = datetime.now(UTC)
        op_time = {"ts": Timestamp(int(now.timestamp()), 1), "t": Int64(1)}
        reply: dict[str, Any] = {
            "topologyVersion": self._topology_version(),
            "hosts": [self.address],
            "setName": SET_NAME,
            "setVersion": 1,
            "isWritablePrimary": True,
            "secondary": False,
            "primary": self.address,
            "me": self.address,
            "electionId": ObjectId("7fffffff0000000000000001"),
            "lastWrite": {
                "opTime": op_time,
                "lastWriteDate": now,
                "majorityOpTime": op_time,
                "majorityWriteDate": now,
            },
            "maxBsonObjectSize": 16 * 1024 * 1024,
            "maxMessageSizeBytes": wire.MAX_MESSAGE_SIZE,
            "maxWriteBatchSize": 100_000,
            "localTime": now,
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": conn.id,
            "minWireVersion": 0,
            "maxWireVersion": MAX_WIRE_VERSION,
            "readOnly": False,
            "ok": 1.0,
        }
        if legacy:
            del reply["isWritablePrimary"]
            reply = {"ismaster": True, **reply}
        if cmd.get("helloOk"):
            reply["helloOk"] = True
        return reply

    # -- commands ------------------------------------------------------------

    def handle(self, request: wire.Request, conn: _Connection) -> Any:
        """The reply document for one request, or ``_CLOSE``."""
        cmd = request.command
        if not cmd:
            return error_reply(9, "empty command")
        name = next(iter(cmd))
        lname = name.lower()
        db = cmd.get("$db") or "admin"
        if lname in ("hello", "ismaster"):
            self.schedule.pick(lname, db, None)  # counted, never faulted
            return self._hello(cmd, lname == "ismaster", conn)
        if lname == "sclibfault":
            self.schedule.pick(lname, db, None)
            try:
                return {**self.schedule.configure(cmd), "ok": 1.0}
            except (FaultSpecError, TypeError, ValueError) as exc:
                return error_reply(2, f"sclibFault: {exc}")
        target = cmd.get("collection") if lname == "getmore" else cmd.get(name)
        fault = self.schedule.pick(
            lname, db, target if isinstance(target, str) else None
        )
        if fault is not None:
            early = self._fault_before(fault, lname, cmd)
            if early is not None:
                return early
        reply = self._run(lname, name, db, cmd, conn)
        if fault is not None:
            if fault.kind == "close_after":
                self._wake_soon()
                return _CLOSE
            if fault.kind == "write_concern_error" and reply.get("ok") == 1:
                reply = self._with_write_concern_error(reply, fault, cmd)
        return reply

    def _fault_before(self, fault: Fault, lname: str, cmd: dict[str, Any]) -> Any:
        if fault.kind == "slow":
            time.sleep(fault.delay_ms / 1000)
            return None
        if fault.kind == "close_before":
            self._wake_soon()
            return _CLOSE
        if fault.kind in ERROR_KINDS or fault.kind == "error":
            code = fault.code or 1
            labels = list(fault.labels) if fault.labels is not None else []
            if (
                fault.labels is None
                and code in RETRYABLE_WRITE_CODES
                and self._retryable_write(lname, cmd)
            ):
                labels = ["RetryableWriteError"]
            extra: dict[str, Any] = {}
            if labels:
                extra["errorLabels"] = labels
            if code in STATE_CHANGE_CODES:
                extra["topologyVersion"] = self._step()
                self._wake_soon()
            message = {
                10107: "not primary",
                189: "Primary stepped down while waiting for replication",
                11600: "interrupted at shutdown",
            }.get(code, f"injected error {code}")
            return error_reply(code, message, **extra)
        return None

    @staticmethod
    def _retryable_write(lname: str, cmd: dict[str, Any]) -> bool:
        return (
            lname in RETRYABLE_WRITES
            and "txnNumber" in cmd
            and "lsid" in cmd
            and "autocommit" not in cmd
        )

    def _with_write_concern_error(
        self, reply: dict[str, Any], fault: Fault, cmd: dict[str, Any]
    ) -> dict[str, Any]:
        code = fault.code or 64
        wce: dict[str, Any] = {
            "code": code,
            "codeName": error_reply(code, "")["codeName"],
            "errmsg": "waiting for replication timed out"
            if code == 64
            else f"injected write concern error {code}",
        }
        if code == 64:
            wce["errInfo"] = {"wtimeout": True}
        reply = {**reply, "writeConcernError": wce}
        labels = list(fault.labels or [])
        lname = next(iter(cmd)).lower()
        if (
            fault.labels is None
            and code in RETRYABLE_WRITE_CODES
            and self._retryable_write(lname, cmd)
        ):
            labels = ["RetryableWriteError"]
        if labels:
            reply["errorLabels"] = labels
        if code in STATE_CHANGE_CODES:
            self._step()
            self._wake_soon()
        return reply

    def _run(
        self, lname: str, name: str, db: str, cmd: dict[str, Any], conn: _Connection
    ) -> dict[str, Any]:
        simple = self._simple(lname, cmd, conn)
        if simple is not None:
            return simple
        if lname in _TRANSACTIONS or cmd.get("startTransaction") or "autocommit" in cmd:
            return error_reply(
                20, "mongowire test server: multi-document transactions are not served"
            )
        if not self.engine.knows(lname):
            return error_reply(59, f"no such command: '{name}'")
        if lname in WRITE_COMMANDS:
            problem = self._check_write_concern(cmd.get("writeConcern"))
            if problem is not None:
                return problem
        key = None
        if self._retryable_write(lname, cmd):
            key = (bytes(cmd["lsid"]["id"]), int(cmd["txnNumber"]))
        with self.lock:
            if key is not None and key in self._records:
                self.schedule.count_replay()
                return dict(self._records[key])
            reply = self.engine.execute(name, cmd)
            if key is not None and reply.get("ok") == 1:
                self._records[key] = reply
                if len(self._records) > MAX_RECORDS:
                    self._records.popitem(last=False)
        return reply

    @staticmethod
    def _check_write_concern(concern: Any) -> dict[str, Any] | None:
        if not isinstance(concern, dict):
            return None
        w = concern.get("w")
        if isinstance(w, int) and w > 1:
            return error_reply(
                100, f"Not enough data-bearing nodes: w {w} on a one-member set"
            )
        if isinstance(w, str) and w != "majority":
            return error_reply(79, f"unrecognized write concern mode: {w}")
        return None

    def _simple(
        self, lname: str, cmd: dict[str, Any], conn: _Connection
    ) -> dict[str, Any] | None:
        """Commands that touch no data."""
        if lname in ("ping", "endsessions", "refreshsessions"):
            return {"ok": 1.0}
        if lname == "buildinfo":
            return {
                "version": SERVER_VERSION,
                "versionArray": [6, 0, 99, 0],
                "gitVersion": "mongowire",
                "bits": 64,
                "maxBsonObjectSize": 16 * 1024 * 1024,
                "ok": 1.0,
            }
        if lname == "getparameter":
            reply: dict[str, Any] = {"ok": 1.0}
            if cmd.get("featureCompatibilityVersion") or cmd.get("getParameter") == "*":
                reply["featureCompatibilityVersion"] = {"version": "6.0"}
            return reply
        if lname == "connectionstatus":
            return {
                "authInfo": {"authenticatedUsers": [], "authenticatedUserRoles": []},
                "ok": 1.0,
            }
        if lname == "whatsmyuri":
            return {"you": conn.peer, "ok": 1.0}
        if lname == "serverstatus":
            return {
                "host": self.address,
                "version": SERVER_VERSION,
                "process": "mongod",
                "ok": 1.0,
            }
        return None
