"""MongoDB wire-protocol framing: OP_MSG, legacy OP_QUERY/OP_REPLY, CRC-32C.

Test infrastructure only (see :mod:`tests.mongowire`). Each message starts with a
16-byte header ``messageLength, requestID, responseTo, opCode`` (little-endian
int32). OP_MSG (2013) carries flag bits, one kind 0 section (the command body) and
any number of kind 1 sections (document sequences, e.g. an insert's
``documents``), then a CRC-32C checksum when flag bit 0 is set. OP_QUERY (2004) is
only used by drivers for the first ``hello``/``isMaster`` of a connection and is
answered with OP_REPLY (1).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.codec_options import CodecOptions

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013

#: OP_MSG flag bits
CHECKSUM_PRESENT = 1 << 0
MORE_TO_COME = 1 << 1
EXHAUST_ALLOWED = 1 << 16

#: the largest message the server says it accepts (maxMessageSizeBytes)
MAX_MESSAGE_SIZE = 48_000_000

#: decoded documents are plain dicts with naive UTC datetimes, as mongomock keeps
#: them; binary subtype 4 (a session id) stays a ``Binary``
CODEC = CodecOptions(document_class=dict, tz_aware=False)

_HEADER = struct.Struct("<iiii")


class ProtocolError(Exception):
    """A message the server cannot read: the connection is closed."""


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes | memoryview) -> int:
    """CRC-32C (Castagnoli), the checksum of OP_MSG's flag bit 0."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@dataclass
class Request:
    """One command read off a connection."""

    request_id: int
    op_code: int
    flags: int
    command: dict[str, Any]
    #: kind 1 sections, merged into ``command`` too
    sequences: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def wants_reply(self) -> bool:
        """False for OP_MSG with moreToCome (an unacknowledged write)."""
        return not (self.op_code == OP_MSG and self.flags & MORE_TO_COME)


def parse_header(data: bytes) -> tuple[int, int, int, int]:
    length, request_id, response_to, op_code = _HEADER.unpack(data)
    if not 16 < length <= MAX_MESSAGE_SIZE:
        raise ProtocolError(f"message length {length} out of range")
    return length, request_id, response_to, op_code


def _cstring(body: bytes, pos: int) -> tuple[str, int]:
    end = body.index(b"\x00", pos)
    return body[pos:end].decode("utf-8"), end + 1


def parse_op_msg(message: bytes) -> Request:
    """An OP_MSG (header included): flag bits, sections, checksum."""
    _, request_id, _, _ = _HEADER.unpack_from(message)
    body = message[16:]
    (flags,) = struct.unpack_from("<I", body, 0)
    if flags & 0xFFFF & ~(CHECKSUM_PRESENT | MORE_TO_COME):
        # the spec: a receiver must fail on unknown required bits (0-15)
        raise ProtocolError(f"unknown required OP_MSG flag bits {flags:#x}")
    end = len(body)
    if flags & CHECKSUM_PRESENT:
        end -= 4
        (expected,) = struct.unpack_from("<I", body, end)
        if crc32c(message[: 16 + end]) != expected:
            raise ProtocolError("OP_MSG checksum mismatch")
    pos = 4
    command: dict[str, Any] | None = None
    sequences: dict[str, list[dict[str, Any]]] = {}
    while pos < end:
        kind = body[pos]
        pos += 1
        if kind == 0:
            (size,) = struct.unpack_from("<i", body, pos)
            if command is not None:
                raise ProtocolError("OP_MSG with two kind 0 sections")
            command = bson.decode(body[pos : pos + size], CODEC)
            pos += size
        elif kind == 1:
            (size,) = struct.unpack_from("<i", body, pos)
            section_end = pos + size
            name, doc_pos = _cstring(body, pos + 4)
            sequences.setdefault(name, []).extend(
                bson.decode_all(body[doc_pos:section_end], CODEC)
            )
            pos = section_end
        else:
            raise ProtocolError(f"unknown OP_MSG section kind {kind}")
    if command is None or pos != end:
        raise ProtocolError("OP_MSG without a body section, or with trailing bytes")
    for name, docs in sequences.items():
        if name in command:
            raise ProtocolError(f"field {name!r} both in the body and a sequence")
        command[name] = docs
    return Request(request_id, OP_MSG, flags, command, sequences)


def parse_op_query(message: bytes) -> Request:
    """A legacy OP_QUERY (header included); only commands on ``<db>.$cmd``."""
    _, request_id, _, _ = _HEADER.unpack_from(message)
    body = message[16:]
    (flags,) = struct.unpack_from("<i", body, 0)
    namespace, pos = _cstring(body, 4)
    pos += 8  # numberToSkip, numberToReturn
    (size,) = struct.unpack_from("<i", body, pos)
    query = bson.decode(body[pos : pos + size], CODEC)
    db, _, coll = namespace.partition(".")
    if coll != "$cmd":
        raise ProtocolError(f"OP_QUERY on {namespace!r}: only commands are served")
    # drivers wrap a command with read preference as {$query: cmd, ...}
    command = dict(query.get("$query", query))
    command["$db"] = db
    return Request(request_id, OP_QUERY, flags, command)


def encode_op_msg(
    response_to: int, request_id: int, reply: Mapping[str, Any], flags: int = 0
) -> bytes:
    payload = struct.pack("<I", flags) + b"\x00" + bson.encode(reply)
    return _HEADER.pack(16 + len(payload), request_id, response_to, OP_MSG) + payload


def encode_op_reply(
    response_to: int, request_id: int, reply: Mapping[str, Any]
) -> bytes:
    payload = struct.pack("<iqii", 0, 0, 0, 1) + bson.encode(reply)
    return _HEADER.pack(16 + len(payload), request_id, response_to, OP_REPLY) + payload


def encode_request(
    request_id: int,
    command: Mapping[str, Any],
    *,
    sequences: Mapping[str, list[Mapping[str, Any]]] | None = None,
    flags: int = 0,
) -> bytes:
    """An OP_MSG request (used by this package's own tests to speak raw)."""
    payload = struct.pack("<I", flags) + b"\x00" + bson.encode(command)
    for name, docs in (sequences or {}).items():
        raw = name.encode() + b"\x00" + b"".join(bson.encode(d) for d in docs)
        payload += b"\x01" + struct.pack("<i", 4 + len(raw)) + raw
    length = 16 + len(payload) + (4 if flags & CHECKSUM_PRESENT else 0)
    message = _HEADER.pack(length, request_id, 0, OP_MSG) + payload
    if flags & CHECKSUM_PRESENT:
        message += struct.pack("<I", crc32c(message))
    return message


def decode_reply(message: bytes) -> dict[str, Any]:
    """The body of an OP_MSG or OP_REPLY reply (header included in ``message``)."""
    _, _, _, op_code = _HEADER.unpack_from(message)
    if op_code == OP_MSG:
        return parse_op_msg(message).command
    if op_code == OP_REPLY:
        return bson.decode(message[36:], CODEC)
    raise ProtocolError(f"not a reply: opCode {op_code}")
