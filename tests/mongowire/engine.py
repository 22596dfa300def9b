"""Commands executed against an in-memory mongomock client, as a server would.

Test infrastructure only (see :mod:`tests.mongowire`). :meth:`Engine.execute`
takes a decoded command document and returns the reply document a MongoDB 6.0
server would send: results, cursors, ``writeErrors`` (code 11000 for a duplicate
key) and error replies (``ok: 0, code, codeName, errmsg``), so that pymongo raises
its real exception classes. The caller runs every command under one lock (see
:class:`tests.mongowire.server.MongoWireServer`), so each is atomic.

What mongomock does not implement (collations, hints, arrayFilters, some
operators) comes back as an error reply naming the test server, never as a
silently wrong answer.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import bson
import mongomock
from bson.int64 import Int64
from mongomock import filtering
from pymongo.errors import DuplicateKeyError, OperationFailure, WriteError

#: codeName of the codes this server sends
CODE_NAMES: dict[int, str] = {
    1: "InternalError",
    2: "BadValue",
    6: "HostUnreachable",
    9: "FailedToParse",
    11: "UserNotFound",
    14: "TypeMismatch",
    20: "IllegalOperation",
    26: "NamespaceNotFound",
    27: "IndexNotFound",
    43: "CursorNotFound",
    48: "NamespaceExists",
    59: "CommandNotFound",
    64: "WriteConcernFailed",
    66: "ImmutableField",
    67: "CannotCreateIndex",
    79: "UnknownReplWriteConcern",
    85: "IndexOptionsConflict",
    86: "IndexKeySpecsConflict",
    91: "ShutdownInProgress",
    100: "UnsatisfiableWriteConcern",
    115: "CommandNotSupported",
    189: "PrimarySteppedDown",
    262: "ExceededTimeLimit",
    10107: "NotWritablePrimary",
    11000: "DuplicateKey",
    11600: "InterruptedAtShutdown",
    11602: "InterruptedDueToReplStateChange",
    13435: "NotPrimaryNoSecondaryOk",
}

#: codes a MongoDB 4.4+ server labels RetryableWriteError on a retryable write
RETRYABLE_WRITE_CODES = frozenset(
    {6, 7, 89, 91, 134, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}
)

#: the commands that are writes (for retryable-write records, write concern)
WRITE_COMMANDS = frozenset(
    {
        "insert",
        "update",
        "delete",
        "findandmodify",
        "create",
        "createindexes",
        "drop",
        "dropindexes",
        "dropdatabase",
    }
)

#: the writes a driver may retry (the retryable writes spec): they carry txnNumber
RETRYABLE_WRITES = frozenset({"insert", "update", "delete", "findandmodify"})

DEFAULT_BATCH = 101
MAX_BATCH_BYTES = 16 * 1024 * 1024


class CommandError(Exception):
    """Becomes ``{ok: 0, code, codeName, errmsg}``."""

    def __init__(self, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra

    def reply(self) -> dict[str, Any]:
        return error_reply(self.code, str(self), **self.extra)


def error_reply(code: int, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "ok": 0.0,
        "errmsg": message,
        "code": code,
        "codeName": CODE_NAMES.get(code, "UnknownError"),
        **extra,
    }


def _unsupported(what: str) -> CommandError:
    return CommandError(
        115, f"mongowire test server: {what} is not supported (mongomock lacks it)"
    )


@dataclass
class _Cursor:
    ns: str
    docs: Iterator[dict[str, Any]]
    batch_size: int | None


def _batch(docs: Iterator[dict[str, Any]], size: int | None) -> list[dict[str, Any]]:
    """Up to ``size`` documents (all when None), at most about 16 MB of them."""
    out: list[dict[str, Any]] = []
    total = 0
    for doc in docs:
        out.append(doc)
        total += len(bson.encode(doc))
        if (size is not None and len(out) >= size) or total >= MAX_BATCH_BYTES:
            break
    return out


def _sort_spec(sort: Mapping[str, Any] | None) -> list[tuple[str, Any]] | None:
    if not sort:
        return None
    for key, direction in sort.items():
        if direction not in (1, -1):
            raise _unsupported(f"sort {key}: {direction!r}")
    return [(k, int(v)) for k, v in sort.items()]


def _key_pattern(key: Any) -> list[tuple[str, Any]]:
    """An index's keys, directions compared as numbers (1 == 1.0) or names."""
    items = key.items() if isinstance(key, Mapping) else key
    return [(k, float(d) if isinstance(d, int | float) else d) for k, d in items]


def _index_options(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The options that make two index specs differ, normalised."""
    return {
        "unique": bool(spec.get("unique", False)),
        "sparse": bool(spec.get("sparse", False)),
        "partialFilterExpression": spec.get("partialFilterExpression"),
        "expireAfterSeconds": spec.get("expireAfterSeconds"),
    }


class Engine:
    """A mongomock client and the server-side state around it (cursors)."""

    def __init__(self) -> None:
        self.client: Any = mongomock.MongoClient(tz_aware=False)
        self.cursors: dict[int, _Cursor] = {}
        self._handlers: dict[str, Callable[[str, dict[str, Any]], dict[str, Any]]] = {
            "find": self._find,
            "getmore": self._get_more,
            "killcursors": self._kill_cursors,
            "aggregate": self._aggregate,
            "count": self._count,
            "distinct": self._distinct,
            "insert": self._insert,
            "update": self._update,
            "delete": self._delete,
            "findandmodify": self._find_and_modify,
            "createindexes": self._create_indexes,
            "listindexes": self._list_indexes,
            "dropindexes": self._drop_indexes,
            "listcollections": self._list_collections,
            "create": self._create,
            "drop": self._drop,
            "dropdatabase": self._drop_database,
            "listdatabases": self._list_databases,
        }

    def knows(self, name: str) -> bool:
        return name.lower() in self._handlers

    def execute(self, name: str, cmd: dict[str, Any]) -> dict[str, Any]:
        """Run one command (the caller holds the server lock)."""
        handler = self._handlers.get(name.lower())
        if handler is None:
            return error_reply(59, f"no such command: '{name}'")
        db = cmd.get("$db")
        if not isinstance(db, str) or not db:
            return error_reply(73, "command has no $db")
        if cmd.get("collation") is not None:
            return _unsupported("collation").reply()
        try:
            reply = handler(db, cmd)
        except CommandError as exc:
            return exc.reply()
        except DuplicateKeyError as exc:
            return error_reply(11000, f"E11000 duplicate key error: {exc}")
        except (OperationFailure, WriteError) as exc:
            return error_reply(exc.code or 2, str(exc))
        except NotImplementedError as exc:
            return _unsupported(str(exc) or name).reply()
        except (ValueError, TypeError, KeyError, bson.errors.InvalidDocument) as exc:
            return error_reply(2, f"{type(exc).__name__}: {exc}")
        reply.setdefault("ok", 1.0)
        return reply

    # -- helpers -------------------------------------------------------------

    def _coll(self, db: str, cmd: Mapping[str, Any], name: str) -> Any:
        coll = cmd.get(name)
        if not isinstance(coll, str) or not coll:
            raise CommandError(
                73, f"collection name has invalid type {type(coll).__name__}"
            )
        return self.client[db][coll]

    def _exists(self, db: str, coll: str) -> bool:
        return coll in self.client[db].list_collection_names()

    def _cursor_reply(
        self,
        ns: str,
        docs: Iterator[dict[str, Any]],
        batch_size: int | None,
        *,
        single_batch: bool = False,
    ) -> dict[str, Any]:
        first = _batch(docs, DEFAULT_BATCH if batch_size is None else batch_size)
        cursor_id = 0
        if not single_batch:
            nxt = next(docs, None)
            if nxt is not None:
                cursor_id = secrets.randbits(62) + 1
                self.cursors[cursor_id] = _Cursor(
                    ns, itertools.chain([nxt], docs), batch_size
                )
        return {"cursor": {"firstBatch": first, "id": Int64(cursor_id), "ns": ns}}

    @staticmethod
    def _batch_size(cmd: Mapping[str, Any]) -> int | None:
        size = cmd.get("batchSize")
        if size is None:
            return None
        if not isinstance(size, int) or size < 0:
            raise CommandError(2, f"batchSize must be a non-negative int: {size!r}")
        return size or None

    # -- reads ---------------------------------------------------------------

    def _find(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        coll = self._coll(db, cmd, "find")
        for option in ("hint", "min", "max", "let", "tailable", "returnKey"):
            if cmd.get(option):
                raise _unsupported(f"find option {option}")
        limit = int(cmd.get("limit") or 0)
        if limit < 0:
            raise CommandError(2, "limit must be non-negative")
        cursor = coll.find(cmd.get("filter") or {}, cmd.get("projection"))
        sort = _sort_spec(cmd.get("sort"))
        if sort:
            cursor = cursor.sort(sort)
        if cmd.get("skip"):
            cursor = cursor.skip(int(cmd["skip"]))
        if limit:
            cursor = cursor.limit(limit)
        batch_size = self._batch_size(cmd)
        if limit and (batch_size is None or batch_size > limit):
            batch_size = limit
        docs = iter(list(cursor))
        return self._cursor_reply(
            f"{db}.{cmd['find']}",
            docs,
            batch_size,
            single_batch=bool(cmd.get("singleBatch")),
        )

    def _get_more(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        cursor_id = int(cmd["getMore"])
        cursor = self.cursors.get(cursor_id)
        ns = f"{db}.{cmd.get('collection')}"
        if cursor is None or cursor.ns != ns:
            raise CommandError(43, f"cursor id {cursor_id} not found")
        size = self._batch_size(cmd)
        batch = _batch(cursor.docs, size)
        nxt = next(cursor.docs, None)
        if nxt is None:
            del self.cursors[cursor_id]
            cursor_id = 0
        else:
            cursor.docs = itertools.chain([nxt], cursor.docs)
        return {"cursor": {"nextBatch": batch, "id": Int64(cursor_id), "ns": ns}}

    def _kill_cursors(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        killed, missing = [], []
        for cursor_id in cmd.get("cursors", []):
            if self.cursors.pop(int(cursor_id), None) is None:
                missing.append(cursor_id)
            else:
                killed.append(cursor_id)
        return {
            "cursorsKilled": killed,
            "cursorsNotFound": missing,
            "cursorsAlive": [],
            "cursorsUnknown": [],
        }

    def _aggregate(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(cmd.get("aggregate"), str):
            raise _unsupported("a database-level aggregate")
        if "cursor" not in cmd and not cmd.get("explain"):
            raise CommandError(
                9, "The 'cursor' option is required, except for aggregate with explain"
            )
        if cmd.get("hint") or cmd.get("let") or cmd.get("explain"):
            raise _unsupported("aggregate hint/let/explain")
        coll = self._coll(db, cmd, "aggregate")
        pipeline = cmd.get("pipeline")
        if not isinstance(pipeline, list):
            raise CommandError(14, "'pipeline' option must be specified as an array")
        docs = iter(list(coll.aggregate(pipeline)))
        batch_size = (cmd.get("cursor") or {}).get("batchSize")
        return self._cursor_reply(
            f"{db}.{cmd['aggregate']}", docs, int(batch_size) if batch_size else None
        )

    def _count(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        coll = self._coll(db, cmd, "count")
        if cmd.get("hint"):
            raise _unsupported("count hint")
        kwargs = {k: int(cmd[k]) for k in ("skip", "limit") if cmd.get(k)}
        if kwargs.get("limit", 0) < 0:
            kwargs["limit"] = -kwargs["limit"]
        return {"n": coll.count_documents(cmd.get("query") or {}, **kwargs)}

    def _distinct(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        coll = self._coll(db, cmd, "distinct")
        key = cmd.get("key")
        if not isinstance(key, str):
            raise CommandError(14, "'key' must be a string")
        return {"values": coll.distinct(key, cmd.get("query") or {})}

    # -- writes --------------------------------------------------------------

    def _dup_details(self, coll: Any, doc: Mapping[str, Any]) -> dict[str, Any]:
        """The unique index a rolled-back insert of ``doc`` collides on, as a
        server names it (keyPattern, keyValue, errmsg)."""
        for name, info in coll.index_information().items():
            if name != "_id_" and not info.get("unique"):
                continue
            keys = [k for k, _ in info["key"]]
            values: dict[str, Any] = {}
            for k in keys:
                try:
                    values[k] = mongomock.helpers.get_value_by_dot(doc, k)
                except KeyError:
                    values[k] = None
            if info.get("sparse") and all(v is None for v in values.values()):
                continue
            pfe = info.get("partialFilterExpression")
            if pfe and not filtering.filter_applies(pfe, doc):
                continue
            query: dict[str, Any] = dict(values)
            if pfe:
                query = {"$and": [pfe, query]}
            if coll.count_documents(query):
                shown = ", ".join(f"{k}: {v!r}" for k, v in values.items())
                return {
                    "errmsg": f"E11000 duplicate key error collection: "
                    f"{coll.full_name} index: {name} dup key: {{ {shown} }}",
                    "keyPattern": {k: 1 for k in keys},
                    "keyValue": values,
                }
        return {"errmsg": f"E11000 duplicate key error collection: {coll.full_name}"}

    @staticmethod
    def _write_error(index: int, exc: Exception) -> dict[str, Any]:
        code = getattr(exc, "code", None) or 2
        if isinstance(exc, NotImplementedError):
            code = 115
        return {"index": index, "code": code, "errmsg": str(exc) or type(exc).__name__}

    def _write_batch(
        self,
        cmd: dict[str, Any],
        items: list[Any],
        apply: Callable[[int, Any], None],
    ) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        ordered = cmd.get("ordered", True)
        for index, item in enumerate(items):
            try:
                apply(index, item)
            except CommandError as exc:
                errors.append({"index": index, "code": exc.code, "errmsg": str(exc)})
            except (
                OperationFailure,
                NotImplementedError,
                ValueError,
                TypeError,
                bson.errors.InvalidDocument,
            ) as exc:
                errors.append(self._write_error(index, exc))
            else:
                continue
            if ordered:
                break
        return errors

    def _insert(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        coll = self._coll(db, cmd, "insert")
        docs = cmd.get("documents") or []
        inserted = 0

        def apply(index: int, doc: dict[str, Any]) -> None:
            nonlocal inserted
            try:
                coll.insert_one(doc)
            except DuplicateKeyError:
                raise CommandError(11000, "dup") from None
            inserted += 1

        errors = self._write_batch(cmd, docs, apply)
        for err in errors:
            if err["code"] == 11000:
                err.update(
                    {"codeName": "DuplicateKey"}
                    | self._dup_details(coll, docs[err["index"]])
                )
        reply: dict[str, Any] = {"n": inserted}
        if errors:
            reply["writeErrors"] = errors
        return reply

    def _update(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        coll = self._coll(db, cmd, "update")
        matched = modified = 0
        upserted: list[dict[str, Any]] = []

        def apply(index: int, op: dict[str, Any]) -> None:
            nonlocal matched, modified
            q, u = op.get("q") or {}, op.get("u")
            if op.get("hint") or op.get("collation") or op.get("c"):
                raise _unsupported("update hint/collation/constants")
            upsert, multi = bool(op.get("upsert")), bool(op.get("multi"))
            kwargs: dict[str, Any] = {"upsert": upsert}
            if op.get("arrayFilters"):
                kwargs["array_filters"] = op["arrayFilters"]
            if isinstance(u, dict) and u and not next(iter(u)).startswith("$"):
                if multi:
                    raise CommandError(
                        9, "multi update is not supported for replacement-style update"
                    )
                result = coll.replace_one(q, u, **kwargs)
            elif multi:
                result = coll.update_many(q, u, **kwargs)
            else:
                result = coll.update_one(q, u, **kwargs)
            raw = result.raw_result
            if raw.get("upserted") is not None:
                upserted.append({"index": index, "_id": raw["upserted"]})
                matched += 1
            else:
                matched += raw["n"]
                modified += raw["nModified"]

        errors = self._write_batch(cmd, cmd.get("updates") or [], apply)
        reply: dict[str, Any] = {"n": matched, "nModified": modified}
        if upserted:
            reply["upserted"] = upserted
        if errors:
            reply["writeErrors"] = errors
        return reply

    def _delete(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        coll = self._coll(db, cmd, "delete")
        deleted = 0

        def apply(index: int, op: dict[str, Any]) -> None:
            nonlocal deleted
            if op.get("hint") or op.get("collation"):
                raise _unsupported("delete hint/collation")
            q = op.get("q") or {}
            limit = op.get("limit", 0)
            if limit not in (0, 1):
                raise CommandError(
                    9, "The limit field in delete objects must be 0 or 1"
                )
            res = coll.delete_one(q) if limit == 1 else coll.delete_many(q)
            deleted += res.deleted_count

        errors = self._write_batch(cmd, cmd.get("deletes") or [], apply)
        reply: dict[str, Any] = {"n": deleted}
        if errors:
            reply["writeErrors"] = errors
        return reply

    def _find_and_modify(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        name = next(iter(cmd))
        coll = self._coll(db, cmd, name)
        query = cmd.get("query") or {}
        fields = cmd.get("fields")
        remove, update = bool(cmd.get("remove")), cmd.get("update")
        new, upsert = bool(cmd.get("new")), bool(cmd.get("upsert"))
        if cmd.get("hint") or cmd.get("let"):
            raise _unsupported("findAndModify hint/let")
        if remove == (update is not None):
            raise CommandError(9, "Either an update or remove=true must be specified")
        if remove and (new or upsert):
            raise CommandError(9, "Cannot specify both new=true and remove=true")
        kwargs: dict[str, Any] = {}
        if cmd.get("arrayFilters"):
            kwargs["array_filters"] = cmd["arrayFilters"]
        sort = _sort_spec(cmd.get("sort"))
        found = list(coll.find(query, {"_id": True}, sort=sort).limit(1))
        target = {"_id": found[0]["_id"]} if found else None
        if remove:
            if target is None:
                return {"lastErrorObject": {"n": 0}, "value": None}
            value = coll.find_one(target, fields)
            coll.delete_one(target)
            return {"lastErrorObject": {"n": 1}, "value": value}
        replacement = (
            isinstance(update, dict)
            and bool(update)
            and not next(iter(update)).startswith("$")
        )

        def write(q: dict[str, Any], upsert_: bool) -> Any:
            if replacement:
                return coll.replace_one(q, update, upsert=upsert_, **kwargs)
            return coll.update_one(q, update, upsert=upsert_, **kwargs)

        if target is not None:
            before = None if new else coll.find_one(target, fields)
            # keep the query's conditions: a positional $ update needs them
            q = (
                dict(query, **target)
                if "_id" not in query
                else {"$and": [query, target]}
            )
            write(q, False)
            value = coll.find_one(target, fields) if new else before
            return {
                "lastErrorObject": {"n": 1, "updatedExisting": True},
                "value": value,
            }
        if not upsert:
            return {
                "lastErrorObject": {"n": 0, "updatedExisting": False},
                "value": None,
            }
        res = write(query, True)
        new_id = res.raw_result.get("upserted")
        value = coll.find_one({"_id": new_id}, fields) if new else None
        return {
            "lastErrorObject": {"n": 1, "updatedExisting": False, "upserted": new_id},
            "value": value,
        }

    # -- indexes and namespaces ---------------------------------------------

    def _create_indexes(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        coll = self._coll(db, cmd, "createIndexes")
        created_collection = not self._exists(db, cmd["createIndexes"])
        if created_collection:
            self.client[db].create_collection(cmd["createIndexes"])
        existing = coll.index_information()
        before = len(existing)
        for spec in cmd.get("indexes") or []:
            key = list((spec.get("key") or {}).items())
            name = spec.get("name")
            if not key or not isinstance(name, str):
                raise CommandError(9, "index specification needs key and name")
            options = _index_options(spec)
            for other_name, info in existing.items():
                other_options = _index_options(info)
                same_key = _key_pattern(info["key"]) == _key_pattern(key)
                shown = f"Requested index: {spec}, existing index: {info}"
                if other_name == name:
                    if not same_key:
                        raise CommandError(
                            86,
                            "An existing index has the same name as the requested "
                            "index. When index names are not specified, they are "
                            "auto generated and can cause conflicts. Please refer to "
                            f"our documentation. {shown}",
                        )
                    if other_options != options and name != "_id_":
                        raise CommandError(
                            85,
                            "An equivalent index already exists with the same name "
                            f"but different options. {shown}",
                        )
                    break
                if same_key and (
                    other_options["partialFilterExpression"]
                    == options["partialFilterExpression"]
                ):
                    raise CommandError(
                        85,
                        f"Index already exists with a different name: {other_name}",
                    )
            else:
                self._add_index(coll, key, name, options)
                existing = coll.index_information()
        reply: dict[str, Any] = {
            "numIndexesBefore": before,
            "numIndexesAfter": len(existing),
            "createdCollectionAutomatically": created_collection,
        }
        if before == len(existing):
            reply["note"] = "all indexes already exist"
        return reply

    def _add_index(
        self, coll: Any, key: list[tuple[str, Any]], name: str, options: dict[str, Any]
    ) -> None:
        pfe = options["partialFilterExpression"]
        if options["unique"]:
            seen: set[str] = set()
            for doc in coll.find(pfe or {}):
                values = []
                for k, _ in key:
                    try:
                        values.append(mongomock.helpers.get_value_by_dot(doc, k))
                    except KeyError:
                        values.append(None)
                if options["sparse"] and all(v is None for v in values):
                    continue
                marker = repr(values)
                if marker in seen:
                    raise CommandError(
                        11000,
                        f"E11000 duplicate key error collection: {coll.full_name} "
                        f"index: {name} dup key: {values!r}",
                    )
                seen.add(marker)
        kwargs = {k: v for k, v in options.items() if v}
        try:
            coll.create_index(key, name=name, **kwargs)
        except DuplicateKeyError:
            # mongomock checks uniqueness without the partial filter; the check
            # above is the one a server makes
            index: dict[str, Any] = {"key": key, **kwargs}
            coll._store.indexes[name] = index

    def _list_indexes(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        coll = self._coll(db, cmd, "listIndexes")
        if not self._exists(db, cmd["listIndexes"]):
            raise CommandError(26, f"ns does not exist: {coll.full_name}")
        docs = []
        for name, info in coll.index_information().items():
            doc: dict[str, Any] = {"v": 2, "key": dict(info["key"]), "name": name}
            for option in ("unique", "sparse", "partialFilterExpression"):
                if info.get(option):
                    doc[option] = info[option]
            if info.get("expireAfterSeconds") is not None:
                doc["expireAfterSeconds"] = info["expireAfterSeconds"]
            docs.append(doc)
        batch = (cmd.get("cursor") or {}).get("batchSize")
        return self._cursor_reply(
            f"{db}.$cmd.listIndexes.{cmd['listIndexes']}", iter(docs), batch or None
        )

    def _drop_indexes(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        coll = self._coll(db, cmd, "dropIndexes")
        if not self._exists(db, cmd["dropIndexes"]):
            raise CommandError(26, f"ns not found {coll.full_name}")
        was = len(coll.index_information())
        index = cmd.get("index")
        names: list[str]
        if index == "*":
            coll.drop_indexes()
            return {"nIndexesWas": was}
        if isinstance(index, str):
            names = [index]
        elif isinstance(index, list):
            names = [str(n) for n in index]
        elif isinstance(index, dict):
            wanted = list(index.items())
            names = [
                n
                for n, info in coll.index_information().items()
                if _key_pattern(info["key"]) == _key_pattern(wanted)
            ]
            if not names:
                raise CommandError(27, f"can't find index with key: {index}")
        else:
            raise CommandError(14, "invalid index argument")
        info = coll.index_information()
        for name in names:
            if name == "_id_":
                raise CommandError(72, "cannot drop _id index")
            if name not in info:
                raise CommandError(27, f"index not found with name [{name}]")
        for name in names:
            coll.drop_index(name)
        return {"nIndexesWas": was}

    def _list_collections(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        database = self.client[db]
        docs = []
        for name in sorted(database.list_collection_names()):
            doc: dict[str, Any] = {
                "name": name,
                "type": "collection",
                "options": {},
                "info": {"readOnly": False},
                "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            }
            if cmd.get("filter") and not filtering.filter_applies(cmd["filter"], doc):
                continue
            docs.append(
                {"name": name, "type": "collection"} if cmd.get("nameOnly") else doc
            )
        batch = (cmd.get("cursor") or {}).get("batchSize")
        return self._cursor_reply(
            f"{db}.$cmd.listCollections", iter(docs), batch or None
        )

    def _create(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd.get("create")
        if not isinstance(name, str) or not name:
            raise CommandError(73, "invalid collection name")
        if self._exists(db, name):
            raise CommandError(48, f"Collection {db}.{name} already exists.")
        self.client[db].create_collection(name)
        return {}

    def _drop(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd.get("drop")
        if not isinstance(name, str):
            raise CommandError(73, "invalid collection name")
        if not self._exists(db, name):
            raise CommandError(26, "ns not found")
        was = len(self.client[db][name].index_information())
        self.client[db].drop_collection(name)
        return {"ns": f"{db}.{name}", "nIndexesWas": was}

    def _drop_database(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        self.client.drop_database(db)
        for cursor_id, cursor in list(self.cursors.items()):
            if cursor.ns.startswith(db + "."):
                del self.cursors[cursor_id]
        return {"dropped": db}

    def _list_databases(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        names = sorted(set(self.client.list_database_names()) | {"admin", "local"})
        dbs = [{"name": n, "sizeOnDisk": 0, "empty": False} for n in names]
        if cmd.get("nameOnly"):
            dbs = [{"name": n} for n in names]
        return {"databases": dbs, "totalSize": 0}
