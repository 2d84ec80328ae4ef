"""Where the engine keeps its state and sends its messages.

`KVStore` / `JetStreamBus` are the real thing (a JetStream key-value bucket
written with revision checks, atomic batches where a decision needs them, JetStream publishes de-duplicated by message id).
`MemoryStore` / `BrokerBus` serve the fast service tests over FastStream's
in-memory test broker. The engine shell only sees the two Protocols.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from dataclasses import dataclass
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

import structlog

from dispatch.core.records import IncidentRec, UnitRec
from dispatch.subjects import INCIDENT_KEYS, UNIT_KEYS, Subjects

log = structlog.get_logger("dispatch.store")

Rec = UnitRec | IncidentRec
Known = Callable[[type, str], int]


@dataclass(frozen=True)
class Deleted:
    """A watch item: the record was deleted (a decision undone: an incident it created)."""

    kind: type[UnitRec] | type[IncidentRec]
    id: str
    rev: int


class Conflict(Exception):
    """Somebody else wrote the record since we read it (another engine replica)."""

    def __init__(self, rec: Rec) -> None:
        super().__init__(f"{type(rec).__name__} {rec.id} changed since revision {rec.rev}")
        self.rec = rec


class BatchConflict(Conflict):
    """An atomic batch refused: one of its records changed since it was read (which one, the server's
    answer does not say)."""

    def __init__(self, recs: list[Rec], why: str) -> None:
        Exception.__init__(self, f"one of {len(recs)} records written together changed since it was read ({why})")
        self.rec = recs[0]
        self.recs = recs


class _WriteRefused(Exception):
    """The stream refused a key-value write (JetStream's error code and description)."""

    def __init__(self, err_code: int | None, description: str) -> None:
        super().__init__(f"key-value write refused: {description} (err_code {err_code})")
        self.err_code = err_code


class _Burst:
    """The answers to one burst of key-value writes: a revision or an error per write (None: none yet)."""

    __slots__ = ("results", "left", "done")

    def __init__(self, n: int, done: "asyncio.Future[None]", asked: int | None = None) -> None:
        self.results: list[int | BaseException | None] = [None] * n
        self.left = n if asked is None else asked  # answers still to come (writes asked to answer)
        self.done = done

    def answer(self, i: int, res: int | BaseException) -> None:
        if self.results[i] is None:
            self.results[i] = res
            self.left -= 1
            if not self.left:
                self.finish()

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _Inline:
    """Stands in for the future of a nats-py subscription (`subscribe(future=...)`), so that nats-py's
    read loop hands every message to `handle` at once: no queue, no subscription task to wake, no
    event-loop turn per message. nats-py uses a future this way for a single request's answer; it
    only calls `cancelled()` and `set_result(msg)` on it. `handle` must be quick and must not block;
    an exception is logged here, never raised into the read loop."""

    __slots__ = ("handle",)

    def __init__(self, handle: Callable[[Any], None]) -> None:
        self.handle = handle

    def cancelled(self) -> bool:
        return False

    def set_result(self, msg: Any) -> None:
        try:
            self.handle(msg)
        except Exception:  # pragma: no cover - the handlers below catch what they expect
            log.exception("handling an answer failed", subject=getattr(msg, "subject", "?"))


class _AnswerInbox:
    """`<inbox>.<token>` answers handled in nats-py's read loop; subscribed on first use, once even
    when two first users race (each would otherwise make its own subscription and keep one)."""

    def __init__(self, handle: Callable[[Any], None]) -> None:
        self.handle = handle
        self.prefix: str | None = None
        self._lock: asyncio.Lock | None = None

    async def get(self, nc: Any) -> str:
        if self.prefix is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self.prefix is None:
                    prefix = nc.new_inbox() + "."
                    await nc.subscribe(prefix + "*", future=_Inline(self.handle))  # type: ignore[arg-type]
                    self.prefix = prefix
        return self.prefix


def _token_of(subject: str) -> str:
    return subject[subject.rfind(".") + 1:]


# a stored message's acknowledgement as nats-server writes it: `{"stream":"S","seq":N}`, with
# `,"duplicate": true` when the message id was seen before. Only printable ASCII without a quote or a
# backslash in the name and a number without leading zeros, so that the fast path reads exactly what
# json.loads would; anything else goes to json.loads.
_PLAIN_ACK = re.compile(rb'\{"stream":"([\x20\x21\x23-\x5b\x5d-\x7e]*)","seq":(0|[1-9][0-9]*)(,"duplicate": ?true)?\}')


def _publish_answer(msg: Any) -> tuple[dict[str, Any] | None, int | None, str]:
    """A JetStream publish answer (a key-value write is one): (the acknowledgement with its `seq`, None,
    "") when the message is stored, else (None, JetStream's error code or None, why)."""
    data = msg.data
    m = _PLAIN_ACK.fullmatch(data)
    if m is not None:  # what nearly every answer is; the same dict json.loads makes of it, a third of the time
        ack: dict[str, Any] = {"stream": m[1].decode(), "seq": int(m[2])}
        if m[3]:
            ack["duplicate"] = True
        return ack, None, ""
    try:
        resp = json.loads(data)
    except ValueError:  # no JSON: a status message, "no responders" when no stream takes the subject
        status = (msg.headers or {}).get("Status", "")
        return None, None, f"no stream answered (status {status or 'none'})"
    err = resp.get("error") if isinstance(resp, dict) else None
    if err:
        return None, err.get("err_code"), str(err.get("description", err))
    if isinstance(resp, dict) and "seq" in resp:
        return resp, None, ""
    return None, None, f"unexpected answer {msg.data[:200]!r}"


class Store(Protocol):
    async def save(self, rec: Rec) -> int:
        """Write rec if the bucket still holds revision rec.rev (0: must not exist); return the new revision."""

    async def save_many(self, recs: list[Rec]) -> list[int | BaseException]:
        """Write several records at once (pipelined); per record its new revision or its error."""

    atomic: bool
    """Whether `save_atomic` can write records all or nothing (a server without atomic batches: not)."""

    async def save_atomic(self, recs: list[Rec]) -> list[int]:
        """Write every record, each if the bucket still holds its revision, or none of them: their new
        revisions, else `Conflict` (one record changed since it was read; which one is not known) or
        another error (nothing written, or, after a timeout, not known to be)."""

    async def get(self, kind: type[Rec], key: str) -> Rec | None: ...

    async def delete(self, kind: type[Rec], key: str, rev: int) -> None:
        """Remove the record if the bucket still holds revision rev (undoing a record just created)."""

    def watch(self, known: Known | None = None) -> AsyncIterator[Rec | Deleted | None]:
        """Every record now stored, then None, then every later change (a deletion as `Deleted`).

        `known(kind, key)`: the revision the watcher holds already; a later change at or below it is
        not worth reading (our own write coming back) and may be left out."""


class Bus(Protocol):
    async def publish(self, subject: str, data: bytes, msg_id: str) -> Awaitable[Any]:
        """Send durably; returns an awaitable that completes when the broker has stored it."""

    async def last_message(self, stream: str, subject: str) -> tuple[str, datetime] | None:
        """Id and time of the last message stored on subject (for re-sending after a crash)."""


# --------------------------------------------------------------------------- in memory


class MemoryStore:
    def __init__(self) -> None:
        self.data: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._rev = 0
        self._changes: asyncio.Queue[Rec | Deleted] = asyncio.Queue()

    async def save(self, rec: Rec) -> int:
        key = (type(rec).__name__, rec.id)
        cur = self.data.get(key)
        if (cur[0] if cur else 0) != rec.rev:
            raise Conflict(rec)
        self._rev += 1
        self.data[key] = (self._rev, rec.dump())
        self._emit(type(rec).model_validate_json(self.data[key][1]).model_copy(update={"rev": self._rev}))
        return self._rev

    def _emit(self, change: Rec | Deleted) -> None:
        """A change for the watchers (one watcher here; test doubles with several override this)."""
        self._changes.put_nowait(change)

    async def save_many(self, recs: list[Rec]) -> list[int | BaseException]:
        out: list[int | BaseException] = []
        for rec in recs:
            try:
                out.append(await self.save(rec))
            except Exception as e:
                out.append(e)
        return out

    atomic = True

    async def save_atomic(self, recs: list[Rec]) -> list[int]:
        for rec in recs:
            cur = self.data.get((type(rec).__name__, rec.id))
            if (cur[0] if cur else 0) != rec.rev:
                raise Conflict(rec)
        # MemoryStore's own save (test doubles override save to stage races): it does not yield before
        # writing, so nobody runs between the checks and the writes
        return [await MemoryStore.save(self, rec) for rec in recs]

    async def delete(self, kind: type[Rec], key: str, rev: int) -> None:
        cur = self.data.get((kind.__name__, key))
        if cur is None or cur[0] != rev:
            raise Conflict(kind.model_construct(id=key, rev=rev))
        del self.data[(kind.__name__, key)]
        self._rev += 1
        self._emit(Deleted(kind, key, self._rev))

    async def get(self, kind: type[Rec], key: str) -> Rec | None:
        cur = self.data.get((kind.__name__, key))
        if cur is None:
            return None
        return kind.model_validate_json(cur[1]).model_copy(update={"rev": cur[0]})

    async def watch(self, known: Known | None = None) -> AsyncIterator[Rec | Deleted | None]:
        for (kind, key), (rev, body) in list(self.data.items()):
            cls = UnitRec if kind == "UnitRec" else IncidentRec
            yield cls.model_validate_json(body).model_copy(update={"rev": rev})
        yield None
        while True:
            yield await self._changes.get()


class BrokerBus:
    """Publishes through a FastStream broker (the in-memory test broker in service tests)."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self.sent: list[tuple[str, bytes]] = []

    async def publish(self, subject: str, data: bytes, msg_id: str) -> Awaitable[Any]:
        self.sent.append((subject, data))
        await self.broker.publish(data, subject, headers={"Nats-Msg-Id": msg_id})
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def last_message(self, stream: str, subject: str) -> tuple[str, datetime] | None:
        for subj, data in reversed(self.sent):
            if subj == subject:
                return _id_and_time(data)
        return None


# --------------------------------------------------------------------------- JetStream


ATOMIC_MAX = 900
"""Records per atomic batch (the server takes at most 1,000 messages in one)."""


class KVStore:
    """Units and incidents in one JetStream key-value bucket (file storage), keys `unit.<id>` and
    `incident.<id>`: one stream, so that a decision's records can be written in one atomic batch."""

    MINE_LIMIT = 200_000
    ATOMIC_MAX = ATOMIC_MAX

    def __init__(self, js: Any, subjects: Subjects, replicas: int = 1, timeout_s: float = 5.0) -> None:
        self.js = js
        self.subjects = subjects
        self.replicas = replicas
        self.timeout_s = timeout_s
        self.kv: Any = None
        self.atomic = False  # known once the bucket is open (atomic batches need nats-server 2.12)
        # revisions this store wrote, noted the moment the bucket answers: the watch need not parse them
        # again (the engine holds those records already). Each is forgotten once it has come back. A
        # unit is never dropped from memory, so an older revision arriving late is still recognised as
        # older; a closed incident is, and the engine remembers its closing revision instead (the
        # watcher's `known`), so an older revision of it arriving late is recognised too.
        self._mine: set[int] = set()
        self._answers = _AnswerInbox(self._on_reply)
        # reply token -> its burst of writes and place in it
        self._waiting: dict[str, tuple[_Burst, int]] = {}
        self._token = 0
        # batch ids are per stream and must not repeat while the server holds an abandoned batch
        # (10 s): random per store, not a pid (every container's engine is pid 1)
        self._batch_prefix = uuid.uuid4().hex[:16] + "-"

    async def open(self) -> "KVStore":
        from nats.js.api import KeyValueConfig, StorageType

        name = self.subjects.bucket_state
        try:
            self.kv = await self.js.key_value(name)
        except Exception:
            self.kv = await self.js.create_key_value(
                KeyValueConfig(bucket=name, history=1, storage=StorageType.FILE, replicas=self.replicas,
                               description="PatrolLink units and incidents")
            )
        self.atomic = await self._allow_atomic(f"KV_{name}")
        return self

    async def _allow_atomic(self, stream: str) -> bool:
        """Switch atomic batches on for the bucket's stream (nats-server 2.12 and later). An older
        server refuses or ignores the setting: the engine then writes a decision's records one
        burst after another, as before, and says so."""
        try:
            info = await self.js.stream_info(stream)
            cfg = info.config
            if not getattr(cfg, "allow_atomic", False):
                cfg.allow_atomic = True
                info = await self.js.update_stream(cfg)
            if getattr(info.config, "allow_atomic", False):
                return True
        except Exception as e:
            log.warning("atomic batches unavailable: decisions are written in bursts", stream=stream, detail=str(e))
            return False
        log.warning("atomic batches unavailable (nats-server older than 2.12?): decisions are written in bursts", stream=stream)
        return False

    @staticmethod
    def _key(kind: type[Rec], id_: str) -> str:
        return Subjects.unit_key(id_) if kind is UnitRec else Subjects.incident_key(id_)

    def _note_mine(self, rev: int) -> None:
        mine = self._mine
        if len(mine) >= self.MINE_LIMIT:
            mine.clear()  # nobody is watching: forget, the watch would only parse a few records again
        mine.add(rev)

    async def save(self, rec: Rec) -> int:
        res = (await self.save_many([rec]))[0]
        if isinstance(res, BaseException):
            raise res
        return res

    async def _burst(self, recs: list[Rec], headers: Callable[[int, Rec], dict[str, str]],
                     answered: Callable[[int], bool]) -> _Burst:
        """Publish one message per record, with the headers `headers(i, rec)` gives, an answer asked for
        where `answered(i)`; then wait for those answers (or the timeout). Returns the burst (its results
        by place)."""
        prefix = await self._reply_inbox()
        nc = self.js._nc
        loop = asyncio.get_running_loop()
        burst = _Burst(len(recs), loop.create_future(), sum(1 for i in range(len(recs)) if answered(i)))
        tokens: list[str] = []
        pre = self.kv._pre
        try:
            for i, rec in enumerate(recs):
                reply = ""
                if answered(i):
                    self._token += 1
                    token = str(self._token)
                    self._waiting[token] = (burst, i)
                    tokens.append(token)
                    reply = prefix + token
                await nc.publish(pre + self._key(type(rec), rec.id), rec.dump(), reply=reply, headers=headers(i, rec))
        except BaseException:
            for token in tokens:
                self._waiting.pop(token, None)
            raise
        if burst.left:
            timer = loop.call_later(self.timeout_s, burst.finish)
            try:
                await burst.done
            finally:
                timer.cancel()
                if burst.left:
                    for token in tokens:
                        self._waiting.pop(token, None)
        return burst

    async def save_many(self, recs: list[Rec]) -> list[int | BaseException]:
        """Publish every write at once, each with the revision it expects (JetStream's
        expected-last-subject-sequence header, as the key-value update does), then collect the answers
        on one reply subscription: one burst of writes instead of a request/response per record.
        The answers fill one list; the last one (or the timeout) wakes the caller once."""
        if not recs:
            return []
        burst = await self._burst(
            recs, lambda i, rec: {"Nats-Expected-Last-Subject-Sequence": str(rec.rev)}, lambda i: True)
        out: list[int | BaseException] = []
        unanswered = [rec for rec, res in zip(recs, burst.results) if res is None]
        landed = iter(await asyncio.gather(*(self._landed(rec) for rec in unanswered)) if unanswered else [])
        for rec, res in zip(recs, burst.results):
            if res is None:
                out.append(next(landed))
            elif isinstance(res, int):
                out.append(res)  # noted as ours when the answer arrived (_on_reply)
            elif isinstance(res, _WriteRefused) and res.err_code in _WRONG_LAST:
                if rec.rev == 0:
                    out.append(await self._create(rec))  # maybe a key deleted before: the bucket's own way
                else:
                    out.append(Conflict(rec))
            else:
                out.append(res)
        return out

    async def save_atomic(self, recs: list[Rec]) -> list[int]:
        """One JetStream atomic batch (ADR-50): every message carries the batch id and its place, each
        the revision its record expects; the last one commits. The server checks every expectation at
        the commit and stores all of them or none; only the commit is answered (the first message asks
        for an answer too when it is the commit). The batch's messages get consecutive sequences: the
        commit's acknowledgement names the last.

        A record created by the decision (revision 0) whose key held a deleted record before counts as
        a conflict here (the expectation is "no record", the key's last sequence is the deletion): the
        engine reads it again and decides again, and its burst path writes it the bucket's own way."""
        if not recs:
            return []
        if len(recs) > self.ATOMIC_MAX:
            raise ValueError(f"{len(recs)} records in one atomic batch (at most {self.ATOMIC_MAX})")
        self._token += 1
        batch_id = f"{self._batch_prefix}{self._token}"
        last = len(recs) - 1

        def headers(i: int, rec: Rec) -> dict[str, str]:
            h = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i + 1),
                 "Nats-Expected-Last-Subject-Sequence": str(rec.rev)}
            if i == last:
                h["Nats-Batch-Commit"] = "1"
            return h

        burst = await self._burst(recs, headers, lambda i: i == last)
        res = burst.results[last]
        if res is None:
            # no answer in time: the batch may have been stored all the same. It is all or nothing, so
            # one record read back as ours (another replica may have written the others since) says
            # where all of them went: consecutive revisions
            found = await asyncio.gather(*(self._landed(rec) for rec in recs))
            for i, rev in enumerate(found):
                if isinstance(rev, int):
                    revs = [rev - i + j for j in range(len(recs))]
                    for r in revs:
                        self._note_mine(r)
                    return revs
            raise TimeoutError(f"no answer to an atomic batch of {len(recs)} records within {self.timeout_s} s")
        if isinstance(res, _WriteRefused):
            if res.err_code in _WRONG_LAST:
                raise BatchConflict(recs, str(res))
            raise res
        assert isinstance(res, int)
        return list(range(res - last, res + 1))  # noted as ours when the answer arrived (_on_reply)

    async def _landed(self, rec: Rec) -> int | BaseException:
        """A write whose answer did not come in time may have been stored all the same (the answer was
        late or lost with the connection). Taken for failed, it would never be undone: a release
        stored while its decision's other writes are undone leaves the unit free and its incident
        holding the order. So read the key back: our bytes there, at a newer revision, mean written."""
        timeout = TimeoutError(f"no answer storing {type(rec).__name__} {rec.id} within {self.timeout_s} s")
        try:
            entry = await asyncio.wait_for(self.kv.get(self._key(type(rec), rec.id)), self.timeout_s)
        except Exception:  # not found, the connection is down, or no answer again: not known to be written
            return timeout
        if entry is None or entry.revision is None or entry.revision <= rec.rev or entry.value != rec.dump():
            return timeout
        self._note_mine(int(entry.revision))
        return int(entry.revision)

    async def _reply_inbox(self) -> str:
        return await self._answers.get(self.js._nc)

    def _on_reply(self, msg: Any) -> None:
        waiting = self._waiting.pop(_token_of(msg.subject), None)
        if waiting is None:
            return
        burst, i = waiting
        ack, code, why = _publish_answer(msg)
        if ack is None:
            burst.answer(i, _WriteRefused(code, why))
            return
        rev = int(ack["seq"])
        # noted before the writer even resumes: the watch may bring the write back first (an atomic
        # batch's acknowledgement names its last sequence and how many it stored)
        for r in range(rev - int(ack.get("count", 1)) + 1, rev + 1):
            self._note_mine(r)
        burst.answer(i, rev)

    async def _create(self, rec: Rec) -> int | BaseException:
        try:
            rev = await self.kv.create(self._key(type(rec), rec.id), rec.dump())
        except Exception as e:
            if "wrong last sequence" in str(e).lower() or "key exists" in str(e).lower():
                return Conflict(rec)
            return e
        self._note_mine(rev)
        return int(rev)

    async def delete(self, kind: type[Rec], key: str, rev: int) -> None:
        await self.kv.delete(self._key(kind, key), last=rev)

    async def get(self, kind: type[Rec], key: str) -> Rec | None:
        from nats.js.errors import KeyDeletedError, KeyNotFoundError

        try:
            entry = await self.kv.get(self._key(kind, key))
        except (KeyNotFoundError, KeyDeletedError):
            return None
        if entry.value is None:
            return None
        return kind.model_validate_json(entry.value).model_copy(update={"rev": entry.revision})

    async def watch(self, known: Known | None = None) -> AsyncIterator[Rec | Deleted | None]:
        """Initial values of the bucket, then None, then its changes in the order they were stored
        (deletions as `Deleted`).

        With `known`, a change whose revision the caller holds already (our own writes coming back,
        mostly) is dropped before it is parsed."""
        mine = self._mine
        initial = True
        watcher = await self.kv.watchall()
        _drop_known_early(watcher, self.kv, mine, known)
        try:
            async for entry in watcher:
                if entry is None:
                    initial = False
                    yield None
                    continue
                kind = _kind_of(entry.key)
                if kind is None:
                    continue  # not a record of ours
                cls, id_ = kind
                if not initial and _already_held(entry.revision, id_, cls, mine, known):
                    continue
                if entry.operation is not None:  # delete or purge
                    if not initial:  # a change after the initial values: replicas must forget it
                        yield Deleted(cls, id_, entry.revision)
                    continue
                if entry.value is None:
                    continue
                yield cls.model_validate_json(entry.value).model_copy(update={"rev": entry.revision})
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()


_WRONG_LAST = (10071, 10164)  # JetStream's "wrong last sequence" error codes (key-value update/create)


def _kind_of(key: str) -> tuple[type[Rec], str] | None:
    """(record class, id) of a state bucket key (None: a key that is not a unit or an incident)."""
    if key.startswith(UNIT_KEYS):
        return UnitRec, key[len(UNIT_KEYS):]
    if key.startswith(INCIDENT_KEYS):
        return IncidentRec, key[len(INCIDENT_KEYS):]
    return None


def ack_numbers(reply: str) -> tuple[int, int]:
    """(delivery count, stream sequence) from a JetStream delivery's reply subject, as nats-py's
    `metadata` reads them without building the rest: `$JS.ACK.<stream>.<consumer>.<delivered>.<stream
    seq>.<consumer seq>.<time>.<pending>` (9 tokens), or with a domain and an account hash after `ACK`.
    For a key-value watch the stream sequence is the revision."""
    t = reply.split(".")
    return (int(t[4]), int(t[5])) if len(t) == 9 else (int(t[6]), int(t[7]))


def _already_held(rev: int, key: str, cls: type[Rec], mine: set[int], known: Known | None) -> bool:
    """A change the watcher need not pass on: a unit revision this store wrote (forgotten once it has
    come back), or one at or below the revision the caller holds for the key."""
    if rev in mine:
        mine.discard(rev)
        return True
    return known is not None and known(cls, key) >= rev


def _drop_known_early(watcher: Any, kv: Any, mine: set[int], known: Known | None) -> None:
    """Drop our own writes coming back through the bucket watch as soon as nats-py hands them to the
    watch's subscription: before it builds an entry (reply subject parsed into metadata, headers
    read), queues it, and wakes the task reading the watcher. Four of these per alert (the unit and
    the incident, written by the alert and by the unit's reply), each a task wake-up and some Python.

    Only after the initial values (the watcher's marker is then sent). What is dropped here is what
    `KVStore.watch` would drop (`_already_held`). nats-py's ordered-consumer bookkeeping (sequence checks,
    resets) has run by then in its read loop, and keeps running: only the callback is wrapped."""
    # `watcher._sub` is nats-py's JetStream wrapper, a copy made when the watch started; the read
    # loop and the subscription's task use the Subscription inside it (`_sub._sub`), so the callback
    # must be replaced there (on the wrapper it would change nothing)
    outer = getattr(watcher, "_sub", None)
    sub = getattr(outer, "_sub", outer)
    inner = getattr(sub, "_cb", None)
    pre = getattr(kv, "_pre", None)
    if inner is None or pre is None or not hasattr(watcher, "_init_done"):
        return  # another nats-py: leave it as it is, `KVStore.watch` filters the same changes later

    async def early(msg: Any) -> None:
        # the subscription's task still counts the message as delivered (flow control stays exact)
        if watcher._init_done and msg.reply:
            try:
                rev = ack_numbers(msg.reply)[1]
            except (ValueError, IndexError):
                rev = -1
            kind = _kind_of(msg.subject[len(pre):])
            if rev > 0 and kind is not None and _already_held(rev, kind[1], kind[0], mine, known):
                return
        await inner(msg)

    early.__wrapped_watch__ = True  # type: ignore[attr-defined]  # tests check it is installed
    sub._cb = early


_HEADER_NAMES: dict[bytes, str | None] = {}  # a header line's name as it comes -> its key, None: skipped
_HEADER_NAMES_KEPT = 512
_REPLACED: list[Callable[[bytes], dict[str, str]]] = []
_SPACE = re.compile(r"\s")  # the characters str.isspace() accepts (sre's Unicode whitespace is the same)


def _header_name(name: bytes) -> str | None:
    """The key nats-py makes of a header line's name (None: the line is skipped), remembered: the same
    few names (`Nats-Msg-Id`, the expected-sequence header) come with every message."""
    key = _HEADER_NAMES.get(name, _HEADER_NAMES)
    if key is not _HEADER_NAMES:
        return key  # type: ignore[return-value]
    try:
        key = name.strip().decode("ascii")
    except UnicodeDecodeError:
        key = None
    if key is not None and _SPACE.search(key) is not None:
        key = None
    if len(_HEADER_NAMES) < _HEADER_NAMES_KEPT:
        _HEADER_NAMES[name] = key
    return key  # type: ignore[return-value]


def header_lines(raw: bytes) -> dict[str, str]:
    """nats-py's `Client._parse_header_lines` (2.16), line for line the same result, without its
    generator over every character of every header name (`any(c.isspace() for c in key)`), which was
    most of its cost: 3 % of a saturated engine's time, for the headers of JetStream deliveries."""
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = _header_name(name)
        if key is None:
            continue
        out[key] = value.strip().decode("utf-8", "replace")
    return out


def use_fast_header_lines() -> bool:
    """Make nats-py parse message headers with `header_lines` (process-wide). Only where nats-py has
    the method this replaces (and not the optional email parser it prefers); returns whether it did."""
    try:
        from nats.aio import client as nats_client
    except ImportError:  # pragma: no cover
        return False
    cls = nats_client.Client
    current = cls.__dict__.get("_parse_header_lines")
    if not isinstance(current, staticmethod) or getattr(nats_client, "parse_email", None) is not None:
        return False
    if current.__func__ is not header_lines:
        _REPLACED.append(current.__func__)  # nats-py's own, for the test that compares the two
        cls._parse_header_lines = staticmethod(header_lines)  # type: ignore[method-assign]
    return True


class PublishRefused(Exception):
    """JetStream did not store a message (its error answer, or no stream answered)."""


class JetStreamBus:
    """JetStream publishes pipelined in order, each de-duplicated by its message id.

    What nats-py's `publish_async` does (a reply subject per message, a future completed by the
    stream's acknowledgement), with the acknowledgements handled in nats-py's read loop (`_Inline`)
    instead of a subscription task woken per acknowledgement, and without building a `PubAck` per
    message: the future's result is the acknowledgement's JSON (stream, seq, duplicate)."""

    ACK_TIMEOUT_S = 10.0  # an acknowledgement lost with a connection fails its future after this

    def __init__(self, js: Any, ack_timeout_s: float | None = None) -> None:
        self.js = js
        self.ack_timeout_s = self.ACK_TIMEOUT_S if ack_timeout_s is None else ack_timeout_s
        self._answers = _AnswerInbox(self._on_ack)
        # token -> (future, deadline); in publish order, so the deadlines ascend
        self._waiting: dict[str, tuple[asyncio.Future[Any], float]] = {}
        self._token = 0
        self._sweeping: asyncio.TimerHandle | None = None

    async def publish(self, subject: str, data: bytes, msg_id: str) -> Awaitable[Any]:
        nc = self.js._nc
        prefix = self._answers.prefix or await self._answers.get(nc)
        self._token += 1
        token = str(self._token)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._waiting[token] = (fut, loop.time() + self.ack_timeout_s)
        try:
            await nc.publish(subject, data, reply=prefix + token, headers={"Nats-Msg-Id": msg_id})
        except BaseException:
            self._waiting.pop(token, None)
            raise
        if self._sweeping is None:
            self._sweeping = loop.call_later(1.0, self._sweep)
        return fut

    def _sweep(self) -> None:
        """Fail the futures whose acknowledgement did not come in time (lost with a connection, say):
        the engine then sends those messages again under the same id, which JetStream de-duplicates.
        One timer for all, not one per message."""
        self._sweeping = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._waiting:
            token, (fut, deadline) = next(iter(self._waiting.items()))
            if deadline > now:
                break
            del self._waiting[token]
            if not fut.done():
                fut.set_exception(TimeoutError(f"no acknowledgement within {self.ack_timeout_s} s"))
        if self._waiting:
            self._sweeping = loop.call_later(1.0, self._sweep)

    def _on_ack(self, msg: Any) -> None:
        waiting = self._waiting.pop(_token_of(msg.subject), None)
        if waiting is None or waiting[0].done():
            return
        fut = waiting[0]
        ack, _, why = _publish_answer(msg)
        if ack is None:
            fut.set_exception(PublishRefused(f"publish refused: {why}"))
        else:
            fut.set_result(ack)

    async def last_message(self, stream: str, subject: str) -> tuple[str, datetime] | None:
        from nats.js.errors import NotFoundError

        try:
            msg = await self.js.get_last_msg(stream, subject)
        except NotFoundError:
            return None
        return _id_and_time(msg.data)


async def ensure_streams(js: Any, subjects: Subjects, replicas: int = 1, duplicate_window_s: float = 120.0) -> None:
    """Create (or update) the file-backed streams: alerts, radio traffic, incident events, dead letters."""
    from nats.js.api import StorageType, StreamConfig

    specs = [
        (subjects.stream_alerts, [subjects.all_alerts], "alerts from cameras and operators"),
        (subjects.stream_radio, [subjects._p("radio.>")], "orders, replies and talkgroup traffic"),
        (subjects.stream_incidents, [subjects.all_incident_events], "every decision about every incident"),
        (subjects.stream_deadletter, [subjects.all_deadletters], "input somebody refused, with the reason"),
        (subjects.stream_ops, [subjects.all_ops], "operator actions on incidents and verdicts on camera alerts"),
    ]
    for name, subs, what in specs:
        cfg = StreamConfig(
            name=name,
            subjects=subs,
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=duplicate_window_s,
            description=what,
            allow_direct=True,
        )
        try:
            await js.add_stream(cfg)
        except Exception:
            await js.update_stream(cfg)


def _id_and_time(data: bytes) -> tuple[str, datetime] | None:
    try:
        body = json.loads(data)
        return str(body["id"]), datetime.fromisoformat(str(body["time"]).replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError):
        return None


OnRecord = Callable[[Rec], Awaitable[None]]
