"""The routing engine's shell: decode, call the core, persist with revision checks, publish.

Replicas share the work: alerts and replies come from durable JetStream
consumers through one queue group, positions and status through a core NATS
queue group; state lives in key-value buckets that every replica watches.
A decision is committed when its records are written (units first, so a unit
claimed by another replica fails before anything else is written); its
messages are then published, de-duplicated by id, and also kept in the
incident's outbox so a restart re-sends what a crash cut off.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import structlog
from pydantic import ValidationError

from dispatch.core.decide import (
    ORPHAN_GRACE,
    AlertIn,
    CloseIncident,
    Escalate,
    Reassign,
    EngineState,
    Input,
    Loaded,
    PositionIn,
    Publish,
    Reject,
    ReplyIn,
    Save,
    StatusIn,
    Tick,
    decide,
    orphans,
    sweep_due,
)
from dispatch.core.records import IncidentRec, OutboxItem, UnitRec
from dispatch.aio import cancel_and_wait
from dispatch.events import (
    Alert,
    Broadcast,
    IncidentAction,
    DispatchOrder,
    IncidentEvent,
    Message,
    OrderReply,
    Rejected,
    UnitPosition,
    UnitStatus,
    describe_error,
    encode,
)
from dispatch.store import ATOMIC_MAX, Bus, Conflict, Deleted, Store
from dispatch.subjects import Subjects

log = structlog.get_logger("dispatch.engine")

Journal = dict[tuple[str, str], UnitRec | IncidentRec | None]
Settle = Callable[[bool], Awaitable[None]]

MAX_CONFLICT_RETRIES = 8
WATCH_RETRY_S = 1.0  # before a failed bucket watch is opened again
MAX_BATCH = 200
POSITION_FLUSH_S = 1.0
RESEND_CLOSED_WITHIN_S = 600.0
CLOSED_REVS_KEPT = 20_000


def utc_clock() -> datetime:
    return datetime.now(timezone.utc)


class EngineShell:
    def __init__(
        self,
        state: EngineState,
        store: Store,
        bus: Bus,
        subjects: Subjects,
        clock: Callable[[], datetime] = utc_clock,
        name: str = "engine",
        max_batch: int = MAX_BATCH,
        position_flush_s: float | None = POSITION_FLUSH_S,
    ) -> None:
        self.state = state
        self.store = store
        self.bus = bus
        self.subjects = subjects
        self.clock = clock
        self.name = name
        self.lock = asyncio.Lock()
        self.deadletters = 0
        self.conflicts = 0
        self.batches = 0  # batches of two or more inputs decided together
        # a rebuild of the state from the buckets failed (the store was away): what is in memory may hold
        # half a decision, so nothing is decided on it until a rebuild succeeds (`_trusted`)
        self.stale = False
        self.fallbacks = 0  # batches undone and decided input by input
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._confirming: set[asyncio.Future[Any]] = set()  # acknowledgements and re-sends still pending
        self.max_batch = max(1, max_batch)
        self.position_flush_s = position_flush_s  # None: write every position report at once
        self._queue: deque[_Job] = deque()
        self._replies: deque[_Job] = deque()  # units' replies: decided before the alerts queued with them
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self._unflushed: dict[str, UnitPosition] = {}  # unit -> latest position held only in memory
        # incident -> revision of the closing write this engine made: a closed incident leaves memory,
        # and the bucket watch drops that write (and anything older for the key) instead of parsing it
        self._closed: dict[str, int] = {}
        self._stopping = False
        # Whether another engine replica shares the bucket. Only another writer can get between a
        # decision's writes, so a lone engine writes all of a decision's records in one burst (one round
        # trip). Shared, it writes the unit claims first, then the incidents, and a decision that takes
        # an order away from a unit as one atomic batch (where the store can; it costs the server a sync
        # to disk, ~3 ms). The app starts it False and turns it on once another replica has been seen
        # (`dispatch.app.meet_replicas`); it then stays on.
        self.shared = True

    # ------------------------------------------------------------------ inbound
    def share(self, why: str) -> None:
        """Another writer shares the bucket (a replica said hello, or a write of somebody else's came
        in): from now on claims first, then incidents, and releases atomically. It stays on."""
        if not self.shared:
            self.shared = True
            log.info("another engine replica is running: unit claims are written first, releases atomically",
                     seen_by=why, atomic_batches=getattr(self.store, "atomic", False))

    async def on_raw(self, subject: str, data: bytes, redelivered: bool = False) -> None:
        """Decode one message by its subject, hand it to the core and wait for the decision; refuse
        what cannot be read. Raises if the decision failed (the broker should deliver it again)."""
        inp = self._decode(subject, data, redelivered)
        if isinstance(inp, str):
            await self.deadletter(subject, data, inp)
            return
        if not await self._apply_one(_Job(subject, data, redelivered, None, inp)):
            raise RuntimeError(f"decision on {subject} failed")

    def submit(self, subject: str, data: bytes, redelivered: bool = False, settle: Settle | None = None) -> None:
        """Queue one message for the next batch of decisions and return at once.

        `settle(True)` is awaited once the decision is stored (or the message refused to the dead
        letters): acknowledge it to JetStream; `settle(False)` when the decision failed: redeliver.
        Messages are decided in the order they were submitted, except that units' replies go ahead
        of everything else waiting (in their own order): a reply frees or moves a unit and is due
        within an acknowledgement deadline, and under a backlog of alerts it would otherwise keep its
        unit busy for as long as the backlog lasts.
        """
        if self._stopping:
            if settle is not None:  # not ours any more: the broker gives it to another replica, or to us again
                task = asyncio.create_task(settle(False))
                self._confirming.add(task)  # type: ignore[arg-type]
                task.add_done_callback(self._confirming.discard)  # type: ignore[arg-type]
            return
        job = _Job(subject, data, redelivered, settle)
        if subject.endswith("reply") and self._is_reply(subject):
            self._replies.append(job)
        else:
            self._queue.append(job)
        self._kick()

    def _is_reply(self, subject: str) -> bool:
        kind = self.subjects.strip(subject).split(".")
        return kind[0] == "radio" and kind[-1] == "reply"

    def submit_input(self, inp: Input) -> None:
        """Queue an input the engine made itself (a position to apply again after a conflict)."""
        if self._stopping:
            return
        self._queue.append(_Job("", b"", False, None, inp))
        self._kick()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._serve())

    async def drained(self) -> None:
        """Until every queued message has been decided and settled."""
        while self._queue or self._replies or not self._idle.is_set():
            await self._idle.wait()

    async def _serve(self) -> None:
        """Take whatever has queued up, decide it as one batch, repeat."""
        while True:
            if not self._queue and not self._replies:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            jobs = [self._replies.popleft() for _ in range(min(len(self._replies), self.max_batch))]
            n = min(len(self._queue), self.max_batch - len(jobs))
            jobs.extend(self._queue.popleft() for _ in range(n))
            try:
                await self._run_batch(jobs)
            except asyncio.CancelledError:
                raise
            except Exception:  # pragma: no cover - _run_batch settles every job itself
                log.exception("batch failed: its inputs will be delivered again")
                for job in jobs:
                    if not job.settled:
                        await self._settle(job, False)

    def _decode(self, subject: str, data: bytes, redelivered: bool) -> Input | str:
        """The core's input for a message, or why it is refused."""
        kind = self.subjects.strip(subject).split(".")
        try:
            if kind[0] == "alerts":
                inp: Input = AlertIn(Alert.model_validate_json(data), redelivered)
            elif kind[0] == "radio" and kind[-1] == "reply":
                inp = ReplyIn(OrderReply.model_validate_json(data), redelivered)
            elif kind[0] == "units" and kind[-1] == "position":
                inp = PositionIn(UnitPosition.model_validate_json(data))
            elif kind[0] == "units" and kind[-1] == "status":
                inp = StatusIn(UnitStatus.model_validate_json(data))
            elif kind[0] == "ops" and len(kind) == 4 and kind[1] == "incident":
                inp = _action_input(IncidentAction.model_validate_json(data), kind)
            else:
                return f"no handler for subject {subject}"
        except ValidationError as e:
            return _why_invalid(e, data)
        except _ActionMismatch as e:
            return str(e)
        # NATS permissions are per subject: a terminal may only speak for the unit its subject names
        return _subject_mismatch(kind, inp) or inp

    async def _settle(self, job: "_Job", ok: bool) -> None:
        job.settled = True
        if job.settle is not None:
            try:
                await job.settle(ok)
            except Exception as e:
                log.warning("could not settle an input with the broker", subject=job.subject, ok=ok, detail=str(e))

    async def _hand_back(self, job: "_Job") -> None:
        """Not decided: the state could not be rebuilt from the buckets; the broker redelivers it."""
        log.warning("input not decided: the state could not be rebuilt from the buckets", subject=job.subject)
        await self._settle(job, False)

    async def _apply_one(self, job: "_Job") -> bool:
        """Decide one input on its own (with conflict retries); dead-letter a refusal; settle it."""
        assert job.inp is not None
        with structlog.contextvars.bound_contextvars(**_ids(job.inp)):
            if not await self._trusted():
                await self._hand_back(job)
                return False
            try:
                reason = await self.apply(job.inp, job.known if job.tried else None)
                if reason is not None and job.subject:
                    await self.deadletter(job.subject, job.data, reason)
            except Exception:
                # FastStream runs without a logger (see app.py): say why before the broker redelivers
                log.exception("decision failed", subject=job.subject)
                await self._settle(job, False)
                return False
        await self._settle(job, True)
        return True

    async def _run_batch(self, jobs: list["_Job"]) -> None:
        """Decide many inputs in memory one after another, store their records in one burst, publish
        every message, then settle them all: one round of writes instead of one per input.

        A refused input is put back and handled on its own afterwards (a reply may need the records
        read again). If the core fails or a record was taken by another replica, the whole batch is
        undone in memory (and in the buckets, as far as written) and every input is decided on its own.
        """
        ready: list[_Job] = []
        for job in jobs:
            if job.inp is None:
                inp = self._decode(job.subject, job.data, job.redelivered)
                if isinstance(inp, str):
                    await self.deadletter(job.subject, job.data, inp)
                    await self._settle(job, True)
                    continue
                job.inp = inp
            ready.append(job)
        if ready and not await self._trusted():
            for job in ready:  # one rebuild tried for the batch, not one per input
                await self._hand_back(job)
            return
        if len(ready) <= 1:
            for job in ready:
                await self._apply_one(job)
            return

        self.batches += 1
        done: list[_Job] = []
        later: list[_Job] = []
        saves: dict[tuple[str, str], UnitRec | IncidentRec] = {}
        outboxes: dict[str, tuple[OutboxItem, ...]] = {}
        batch_journal: Journal = {}
        fallback = False
        sent: list[tuple[str, bytes, str, Any]] = []
        async with self.lock:
            # read under the lock: a recovery while we waited for it replaces the state, and deciding on the
            # old one would stamp our writes' revisions onto the new one's records (a unit still "available"
            # there, at the revision of our claim: the next decision would give it a second order)
            state = self.state
            for job in ready:
                assert job.inp is not None
                job.msg_id = _msg_id(job.inp)
                job.known = job.msg_id is not None and job.msg_id in state.seen
                job.tried = True
                journal = state.begin()
                try:
                    _, cmds = decide(state, job.inp, self.clock())
                except Exception:
                    state.end()
                    state.undo(journal)
                    log.warning("a decision failed inside a batch: deciding its inputs one by one", exc_info=True)
                    fallback = True
                    break
                state.end()
                if any(isinstance(c, Reject) for c in cmds):
                    state.undo(journal)
                    self._forget_id(job)
                    later.append(job)
                    continue
                for k, v in journal.items():
                    batch_journal.setdefault(k, v)
                job.keys = list(journal)
                job_saves = [c.record for c in cmds if isinstance(c, Save)]
                if self._defer_position(job.inp, cmds, journal):
                    job_saves = []
                for rec in job_saves:
                    if isinstance(rec, IncidentRec):
                        # two decisions on one incident in a batch: its outbox keeps the messages of both
                        box = outboxes.get(rec.id, ()) + rec.outbox
                        outboxes[rec.id] = box
                        if len(box) != len(rec.outbox):
                            rec = rec.model_copy(update={"outbox": box})
                            if rec.is_open:
                                state.incidents[rec.id] = rec
                        saves[("i", rec.id)] = rec
                    else:
                        saves[("u", rec.id)] = rec
                job.messages = [c for c in cmds if isinstance(c, Publish)]
                done.append(job)
            failed: list[_Job] = []
            if fallback:
                state.undo(batch_journal)
                for job in done:
                    self._forget_id(job)
            else:

                async def send(stored: list[_Job]) -> None:
                    for job in stored:
                        for c in job.messages:
                            sent.append(await self._publish(c.message, c.data))
                    for job in stored:
                        logged = [c.message for c in job.messages if _loggable(c.message)]
                        if logged:
                            with structlog.contextvars.bound_contextvars(**_ids(job.inp)):  # type: ignore[arg-type]
                                _log_after_send(logged)

                failed = await self._commit(done, saves, batch_journal, send)
        if fallback:
            self.fallbacks += 1
            for job in ready:
                await self._apply_one(job)
            return
        self._confirm_later(sent)
        for job in done:
            if not job.failed:
                await self._settle(job, True)
        if failed:
            self.fallbacks += 1
        refused = {id(j) for j in later}
        for job in ready:
            if job.failed or id(job) in refused:
                await self._apply_one(job)

    async def _commit(self, done: list["_Job"], saves: dict[tuple[str, str], UnitRec | IncidentRec], journal: Journal,
                      send: Callable[[list["_Job"]], Awaitable[None]]) -> list["_Job"]:
        """Store a batch's records and `send` the messages of the decisions stored. Decisions that touched
        a common record stand or fall together (a group). A group that takes an order away from a unit
        is written as one atomic batch; the others units first, then incidents (`_phase`), and their
        messages are sent as soon as those are stored, without waiting for the atomic batches (which
        the server syncs to disk: a few milliseconds). A group that lost a record to another replica
        (or could not be stored) is undone, in the bucket and in memory, and returned to be decided
        again one by one, while the other groups stand. Returns the jobs of the groups undone."""
        parent = list(range(len(done)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        owner: dict[tuple[str, str], int] = {}
        for i, job in enumerate(done):
            for k in job.keys:
                j = owner.setdefault(k, i)
                if j != i:
                    parent[root(i)] = root(j)
        group = {k: root(i) for k, i in owner.items()}
        bad: set[int] = set()
        written: list[tuple[tuple[str, str], UnitRec | IncidentRec, int]] = []
        started = self.clock()
        shared = self.shared  # one mode for the whole commit, even if a conflict turns it on meanwhile
        atomic = _releasing_groups(saves, journal, group) if self.store.atomic and shared else set()
        phase_of = _phase if shared else _one_phase

        async def in_phases() -> None:
            nonlocal bad
            for phase in range(PHASES):
                if phase == 1 and shared and self._claims_too_slow(started, [(r, rev) for _, r, rev in written]):
                    bad |= {group[k] for k, _, _ in written}
                    log.warning("a batch's unit claims took too long to store: its decisions are taken again one by one")
                keys = [k for k, r in saves.items() if phase_of(r) == phase and group[k] not in bad and group[k] not in atomic]
                if not keys:
                    continue
                if not shared:
                    keys.sort(key=lambda k: _phase(saves[k]))  # one burst, in the same order: units first
                results = await self.store.save_many([saves[k] for k in keys])
                for k, res in zip(keys, results):
                    if isinstance(res, BaseException):
                        bad.add(group[k])
                        if isinstance(res, Conflict):
                            self.conflicts += 1
                            self.share("conflict")
                            log.info("conflict in a batch: its decisions are taken again one by one", record=k[1], detail=str(res))
                        else:
                            log.warning("storing part of a batch failed: its decisions are taken again one by one", record=k[1], detail=str(res))
                    else:
                        written.append((k, saves[k], res))
                        self._stored(saves[k], res)

        async def all_or_nothing(keys: list[tuple[str, str]]) -> None:
            try:
                revs = await self.store.save_atomic([saves[k] for k in keys])
            except Conflict as e:
                self.conflicts += 1
                bad.update(group[k] for k in keys)
                log.info("conflict in a batch: its decisions are taken again one by one", detail=str(e))
                return
            except Exception as e:  # nothing stored (or not known to be: the retry's conflict re-reads it)
                bad.update(group[k] for k in keys)
                log.warning("storing part of a batch failed: its decisions are taken again one by one", detail=str(e))
                return
            for k, rev in zip(keys, revs):
                self._stored(saves[k], rev)

        # the atomic batches go out first and are awaited last
        pending = [asyncio.ensure_future(all_or_nothing(keys)) for keys in _atomic_chunks(saves, group, atomic)]
        try:
            await in_phases()
        except BaseException:
            await asyncio.gather(*pending, return_exceptions=True)
            await self._recover(None)  # what was stored and what not is unknown: the buckets say
            raise
        await send([job for i, job in enumerate(done) if root(i) not in bad and root(i) not in atomic])
        errors = [r for r in await asyncio.gather(*pending, return_exceptions=True) if isinstance(r, BaseException)]
        if errors:
            await self._recover(None)
            raise errors[0]
        await send([job for i, job in enumerate(done) if root(i) in atomic and root(i) not in bad])
        if not bad:
            return []
        await self._undo([(rec, rev) for k, rec, rev in written if group[k] in bad], journal)
        self.state.undo({k: v for k, v in journal.items() if group[k] in bad})
        failed = [job for i, job in enumerate(done) if root(i) in bad]
        for job in failed:
            job.failed = True
            self._forget_id(job)
        try:
            await self._reload([rec for k, rec in saves.items() if group[k] in bad])
        except Exception:
            await self._recover(None)
        return failed

    def _stored(self, rec: UnitRec | IncidentRec, rev: int) -> None:
        self.state.stored(rec, rev)
        if isinstance(rec, IncidentRec) and not rec.is_open:
            if len(self._closed) >= CLOSED_REVS_KEPT:
                for k in list(self._closed)[: CLOSED_REVS_KEPT // 2]:  # the oldest half (insertion order)
                    del self._closed[k]
            self._closed[rec.id] = max(rev, self._closed.get(rec.id, 0))
        if self._unflushed and isinstance(rec, UnitRec):
            p = self._unflushed.get(rec.id)
            if p is not None and (rec.lat, rec.lon) == (p.lat, p.lon):
                del self._unflushed[rec.id]

    def _forget_id(self, job: "_Job") -> None:
        """An undone decision: its message id must not make its next attempt look like a replay."""
        if job.msg_id is not None and not job.known:
            self.state.seen.pop(job.msg_id, None)

    # ------------------------------------------------------------------ positions
    def _defer_position(self, inp: Input, cmds: list[Any], journal: Journal) -> bool:
        """A position report that only moves a unit which already has a recent fix is kept in memory
        and written with the next flush (positions are the bulk of the traffic); the first fix, a
        fix after a stale one, and anything that changes more than the position are written at once."""
        if self.position_flush_s is None or not isinstance(inp, PositionIn) or len(cmds) != 1:
            return False
        c = cmds[0]
        if not isinstance(c, Save) or not isinstance(c.record, UnitRec):
            return False
        new = c.record
        old = journal.get(("u", new.id))
        if not isinstance(old, UnitRec) or old.lat is None or old.fix_time is None or new.fix_time is None:
            return False
        if (new.fix_time - old.fix_time).total_seconds() > self.state.policy.stale_position_s / 2:
            return False
        if (old.state, old.incident, old.order, old.exercise) != (new.state, new.incident, new.order, new.exercise):
            return False
        self._unflushed[new.id] = inp.position
        return True

    async def flush_positions(self) -> int:
        """Write the units whose position moved since they were last stored; returns how many."""
        if not self._unflushed:
            return 0
        async with self.lock:
            pending, self._unflushed = self._unflushed, {}
            recs = [self.state.units[u] for u in pending if u in self.state.units]
            results = await self.store.save_many(recs)
            written = 0
            for rec, res in zip(recs, results):
                if isinstance(res, Conflict):
                    # another replica wrote the unit (a claim): take its record, then our position again
                    self.share("conflict")
                    fresh = await self.store.get(UnitRec, rec.id)
                    if fresh is not None:
                        decide(self.state, Loaded(fresh), self.clock())
                    p = pending[rec.id]
                    cur = self.state.units[rec.id]
                    if cur.fix_time is None or cur.fix_time < p.time:
                        self.submit_input(PositionIn(p))
                elif isinstance(res, BaseException):
                    self._unflushed.setdefault(rec.id, pending[rec.id])  # the store is down: next time
                    log.warning("position flush failed", unit=rec.id, detail=str(res))
                else:
                    self.state.stored(rec, res)
                    written += 1
        return written

    async def _flush_positions_forever(self) -> None:
        assert self.position_flush_s is not None
        while True:
            await asyncio.sleep(self.position_flush_s)
            try:
                await self.flush_positions()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("position flush failed")

    async def apply(self, inp: Input, known_before: bool | None = None) -> str | None:
        """Run one decision to completion. Returns a refusal reason, if the core refused the input.

        `known_before`: whether the input's message id was known before its first attempt, when that
        attempt was made elsewhere (in a batch that was undone)."""
        msg_id = _msg_id(inp)
        sent: list[tuple[str, bytes, str, Any]] = []
        refreshed = False
        conflicts = 0
        first = known_before is None
        known_at_start = bool(known_before)
        for _ in range(MAX_CONFLICT_RETRIES):
            if conflicts:
                # Lost a record to another replica: give the bucket watch (which needs the lock) a moment
                # to bring in what the others wrote, or every retry discovers one more stale unit.
                await asyncio.sleep(0.002 * conflicts)
            async with self.lock:
                if first:
                    known_at_start = msg_id is not None and msg_id in self.state.seen
                    first = False
                elif msg_id is not None and not known_at_start:
                    # the same delivery, tried again: whatever noted its id meanwhile (a bucket record of
                    # an attempt that was undone) must not make it look like a replay
                    self.state.seen.pop(msg_id, None)
                # one time for the sweep's check and its decision: a unit whose grace ran out while its
                # record was being read back would be freed unchecked
                now = self.clock()
                swept: list[UnitRec] = []
                if isinstance(inp, Tick) and sweep_due(self.state, now):
                    swept = await self._confirm_orphans(now)
                # the core changes the state in place; the journal keeps the records it replaces, to undo
                before = self.state.begin()
                try:
                    _, cmds = decide(self.state, inp, now)
                except Exception:
                    self.state.end()
                    await self._recover(msg_id)
                    raise
                self.state.end()
                if not cmds and getattr(inp, "redelivered", False):
                    log.info("redelivered input was handled before: nothing to do")
                refusal = next((c.reason for c in cmds if isinstance(c, Reject)), None)
                if refusal is not None:
                    # A refusal can come after the core changed records in place (a reply whose transition
                    # is refused after the unit was released): put them back, or the next decision would
                    # take a unit the buckets still give to an order.
                    self.state.undo(before)
                    if isinstance(inp, ReplyIn) and not refreshed:
                        # Another replica may have sent the order a moment ago (our bucket watch lags) or
                        # the refused attempt may have changed what it touched: read both again, decide again.
                        refreshed = True
                        await self._refresh(inp.reply.unit, inp.reply.incident_id)
                        continue
                    if isinstance(inp, StatusIn) and not refreshed:
                        # the same for a unit's status: its record and its incident's, read again
                        refreshed = True
                        await self._refresh(inp.status.unit, None)
                        continue
                    return refusal
                saves = [c.record for c in cmds if isinstance(c, Save)]
                if self._defer_position(inp, cmds, before):
                    saves = []
                try:
                    await self._persist(saves, before)
                except Conflict as e:
                    self.conflicts += 1
                    conflicts += 1
                    self.share("conflict")
                    log.info("conflict", record=e.rec.id, detail=str(e))
                    if msg_id is not None:
                        self.state.seen.pop(msg_id, None)
                    await self._reload(saves)
                    continue
                except Exception:
                    await self._recover(msg_id)
                    raise
                logged = []
                for c in cmds:
                    if isinstance(c, Publish):
                        sent.append(await self._publish(c.message, c.data))
                        if _loggable(c.message):
                            logged.append(c.message)
                if logged:
                    _log_after_send(logged)
                for u in swept:
                    now_u = self.state.units.get(u.id)
                    if now_u is not None and now_u.order != u.order:
                        log.warning("orphaned order withdrawn: no incident holds it", unit=u.id, order_id=u.order,
                                    incident_id=u.incident, since=u.updated.isoformat() if u.updated else None)
                break
        else:
            async with self.lock:
                await self._recover(msg_id)
            raise RuntimeError(f"gave up after {MAX_CONFLICT_RETRIES} conflicting writes")
        self._confirm_later(sent)
        return None

    def _confirm_later(self, sent: list[tuple[str, bytes, str, Any]]) -> None:
        """The broker's acknowledgements are awaited in the background: the decision is durable
        already (the incident's outbox holds these messages until the next decision), and the next
        input need not wait one more round trip. Each acknowledgement is checked by a callback on its
        future as it arrives; only a message the broker did not store gets a task, which sends it
        again (a task per decision, woken by each acknowledgement, cost more than the check)."""
        for item in sent:
            fut = item[3]
            if not isinstance(fut, asyncio.Future):  # another kind of awaitable: a task awaits it
                self._resend_later(item)
            elif fut.done():
                self._acked(item, fut)
            else:
                self._confirming.add(fut)
                fut.add_done_callback(functools.partial(self._acked, item))

    def _acked(self, item: tuple[str, bytes, str, Any], fut: "asyncio.Future[Any]") -> None:
        self._confirming.discard(fut)
        if fut.cancelled():
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(ConnectionError("the acknowledgement was cancelled"))
            self._resend_later((*item[:3], failed))
        elif fut.exception() is not None:
            self._resend_later(item)

    def _resend_later(self, item: tuple[str, bytes, str, Any]) -> None:
        task = asyncio.create_task(self._confirm([item]))
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    async def _confirm(self, sent: list[tuple[str, bytes, str, Any]]) -> None:
        """Wait until the broker stored each message; send again (same id, de-duplicated) if not."""
        for subject, data, msg_id, fut in sent:
            for attempt in range(1, 5):
                try:
                    await fut
                    break
                except Exception as e:
                    log.warning("publish not confirmed, sending again", subject=subject, attempt=attempt, detail=str(e))
                    await asyncio.sleep(0.25 * attempt)
                    try:
                        fut = await self.bus.publish(subject, data, msg_id)
                    except Exception as e2:
                        fut = asyncio.get_running_loop().create_future()
                        fut.set_exception(e2)
            else:
                log.error("publish failed; the incident's outbox re-sends it at the next start", subject=subject, message_id=msg_id)

    async def _persist(self, saves: list[UnitRec | IncidentRec], before: Journal | None = None) -> None:
        """Write a decision's records; if any write fails, undo the ones that succeeded, then raise.

        Keys are written one by one, so without the undo a decision that loses one record to another
        replica would leave the others claimed: a unit held by an order that was never sent, or an
        incident nobody opened. `before` holds the records as they were (None: created by the decision).
        """
        if self.store.atomic and self.shared and len(saves) > 1 and _releases(saves, before or {}):
            # a release with the incident write that goes with it: both stored, or neither (nothing to
            # undo). Written in two steps, another replica could take the unit between the release and
            # an incident write that then conflicts, and our undo would find the unit gone.
            for rec, rev in zip(saves, await self.store.save_atomic(saves)):
                self._stored(rec, rev)
            return
        written: list[tuple[UnitRec | IncidentRec, int]] = []
        started = self.clock()
        try:
            # Unit claims first: losing a unit to another replica must fail before an incident is written.
            # Incidents the decision opens come last, once nothing else can fail: the other replica sees a
            # new incident at once and may join an alert to it before it could be deleted again.
            # alone: one burst, nobody can get between its writes
            for group in (_phases(saves) if self.shared or not saves else [sorted(saves, key=_phase)]):
                if _phase(group[0]) > 0 and self._claims_too_slow(started, written):
                    raise _SlowClaims(next(r for r, _ in written if isinstance(r, UnitRec)))
                results = await self.store.save_many(group)
                failed: BaseException | None = None
                for rec, res in zip(group, results):
                    if isinstance(res, BaseException):
                        failed = failed or res
                    else:
                        written.append((rec, res))
                        self._stored(rec, res)
                if failed is not None:
                    raise failed
        except Exception:
            await self._undo(written, before or {})
            raise

    async def _undo(self, written: list[tuple[UnitRec | IncidentRec, int]], before: Journal) -> None:
        """Put back what a failed decision wrote, last written first: the incidents before the unit
        claims they name. An incident somebody wrote since keeps their version, and that version may
        hold our order for the unit we claimed: then the claim stays too (freed by the orphan sweep
        later if no incident holds it after all), or the unit would be free while an incident holds it."""
        kept: set[str] = set()
        for rec, rev in reversed(written):
            prev = before.get(("u" if isinstance(rec, UnitRec) else "i", rec.id))
            if isinstance(rec, UnitRec) and rec.order is not None and rec.incident in kept:
                log.warning("undo skipped: the incident that holds this claim was kept", record=rec.id, incident_id=rec.incident)
                continue
            try:
                if prev is None:
                    await self.store.delete(type(rec), rec.id, rev)  # an incident this attempt created
                else:
                    await self.store.save(prev.model_copy(update={"rev": rev}))
            except Exception as e:  # somebody wrote it since: their version stands
                log.warning("undo failed", record=rec.id, detail=str(e))
                if isinstance(rec, IncidentRec):
                    kept.add(rec.id)

    def _claims_too_slow(self, started: datetime, written: list[tuple[UnitRec | IncidentRec, int]]) -> bool:
        """Claims are stored, and storing them took more than half the orphan grace: another replica may
        take them for orphans before our incidents are written (its sweep frees a claim no incident
        holds after ORPHAN_GRACE), so they are undone instead and the decision taken again."""
        return any(isinstance(r, UnitRec) and r.order is not None for r, _ in written) and self.clock() - started > ORPHAN_GRACE / 2

    async def _confirm_orphans(self, now: datetime) -> list[UnitRec]:
        """Before a sweep at `now`: read every unit it would free, and the incident the unit names, from
        the buckets (adopted as the watch would: newer revisions only, held positions kept). Our memory
        of the other replica's writes may lag behind, and a unit it claimed a while ago whose incident
        write we have not seen yet is not an orphan: freeing it would give it a second order. Until no
        unit is left unchecked (an incident read back may leave another unit of ours orphaned). Returns
        the units that are orphans by the buckets too: what the sweep will free."""
        checked: set[str] = set()
        for _ in range(3):
            todo = [u for u in orphans(self.state, now) if u.id not in checked]
            if not todo:
                break
            for u in todo:
                checked.add(u.id)
                fresh = await self.store.get(UnitRec, u.id)
                if fresh is None:
                    continue
                self._adopt_one(fresh)
                if fresh.incident:
                    inc = await self.store.get(IncidentRec, fresh.incident)
                    if inc is not None:
                        self._adopt_one(inc)
        return [u for u in orphans(self.state, now) if u.id in checked]

    async def _refresh(self, unit_id: str, incident_id: str | None) -> None:
        """Replace one unit and one incident (None: the one the unit's record names, if any) by what
        the buckets hold now."""
        if unit_id in self.state.units:
            unit = await self.store.get(UnitRec, unit_id)
            if unit is not None:
                # newer records adopted as the bucket watch adopts them: a position held in memory is
                # applied again over the unit read back, an incident new here brings its alert ids
                # (replays); one we hold at that revision already is left as it is
                if self._known_rev(UnitRec, unit.id) < unit.rev:
                    self._adopt_one(unit)
                if incident_id is None:
                    incident_id = unit.incident  # type: ignore[union-attr]
        if incident_id is None:
            return
        inc = await self.store.get(IncidentRec, incident_id)
        if inc is None:
            self.state.forget_incident(incident_id)
        else:
            self._adopt_one(inc)  # newer revisions only, as for the unit (no position held for it)

    async def _recover(self, msg_id: str | None) -> None:
        """The core or the store failed half-way through a decision: its in-place changes cannot be
        trusted, so rebuild the whole state from the buckets. The input is forgotten so that the
        broker's redelivery is decided afresh instead of being taken for a duplicate."""
        if msg_id is not None:
            self.state.seen.pop(msg_id, None)
        try:
            fresh = EngineState(self.state.district, self.state.router.graph)
            fresh.counters = self.state.counters
            it = self.store.watch()
            try:
                async for rec in it:
                    if rec is None:
                        break
                    if not isinstance(rec, Deleted):
                        decide(fresh, Loaded(rec), self.clock())
            finally:
                await it.aclose()  # type: ignore[attr-defined]
            self.state = fresh
            self.stale = False
            log.warning("state rebuilt from the buckets after a failed decision", units=len(fresh.units), open=len(fresh.incidents))
        except Exception:
            self.stale = True
            log.exception("could not rebuild the state: inputs wait (redelivered) until a rebuild succeeds")

    async def _trusted(self) -> bool:
        """Is the state in memory fit to decide on? After a failed rebuild, try again first. (Seen in a
        drill: a unit's `cleared` failed while NATS restarted, the rebuild failed too, and the redelivered
        reply was then judged on the half-changed state and dead-lettered: the incident stayed open.)"""
        if self.stale:
            await self._recover(None)
        return not self.stale

    async def _reload(self, recs: list[UnitRec | IncidentRec]) -> None:
        """Replace what a failed decision touched by what the buckets hold."""
        for rec in recs:
            fresh = await self.store.get(type(rec), rec.id)
            if isinstance(rec, UnitRec):
                if fresh is None:
                    base = self.state.units[rec.id]
                    fresh = UnitRec(id=rec.id, callsign=base.callsign, kind=base.kind, mode=base.mode, talkgroup=base.talkgroup)
                self.state.put_unit(fresh)  # type: ignore[arg-type]
            elif fresh is None:
                self.state.forget_incident(rec.id)
            else:
                self.state.forget_incident(rec.id)
                self.state.put_incident(fresh)  # type: ignore[arg-type]

    async def _publish(self, m: Message, data: bytes | None = None) -> tuple[str, bytes, str, Any]:
        s = self.subjects
        if isinstance(m, DispatchOrder):
            subject = s.order(m.unit)
        elif isinstance(m, Broadcast):
            subject = s.talkgroup(m.talkgroup, m.exercise)
        elif isinstance(m, IncidentEvent):
            subject = s.incident_event(m.incident_id, m.event.value)
        else:  # pragma: no cover - the core only emits these three
            raise TypeError(type(m))
        if data is None:
            data = encode(m)
        return subject, data, m.id, await self.bus.publish(subject, data, m.id)

    async def deadletter(self, subject: str, data: bytes, reason: str) -> None:
        self.deadletters += 1
        log.warning("deadletter", subject=subject, reason=reason, count=self.deadletters)
        rej = Rejected(subject=subject, reason=reason, raw=base64.b64encode(data).decode(), refused_by=self.name)
        fut = await self.bus.publish(self.subjects.deadletter(self.subjects.strip(subject)), encode(rej), rej.id)
        await fut

    # ------------------------------------------------------------------ lifecycle
    async def load(self) -> None:
        """Rebuild state from the buckets, re-send what a crash may have cut off, then follow changes."""
        it = self.store.watch(known=self._known_rev).__aiter__()
        n_units = n_incidents = 0
        while True:
            rec = await it.__anext__()
            if rec is None:
                break
            if isinstance(rec, Deleted):
                continue
            decide(self.state, Loaded(rec), self.clock())
            if isinstance(rec, UnitRec):
                n_units += 1
            else:
                n_incidents += 1
                await self._resend_outbox(rec)
        log.info("state loaded", units=n_units, incidents=n_incidents, open=len(self.state.incidents))
        self._tasks.append(asyncio.create_task(self._follow(it)))
        if self.position_flush_s is not None:
            self._tasks.append(asyncio.create_task(self._flush_positions_forever()))
        self.ready.set()

    async def _resend_outbox(self, rec: IncidentRec) -> None:
        if not rec.outbox:
            return
        if not rec.is_open and rec.closed_at is not None:
            if (self.clock() - rec.closed_at).total_seconds() > RESEND_CLOSED_WITHIN_S:
                return
        cls_by_type = {"order": DispatchOrder, "broadcast": Broadcast, "event": IncidentEvent}
        resent = 0
        for item in rec.outbox:
            m = cls_by_type[item.type].model_validate_json(item.body)
            subject = self._subject_of(m)
            stream = self.subjects.stream_incidents if item.type == "event" else self.subjects.stream_radio
            last = await self.bus.last_message(stream, subject)
            # subjects such as talkgroups are shared: a later message there means ours went out before it
            if last is not None and (last[0] == m.id or last[1] >= m.time):
                continue
            await (await self.bus.publish(subject, item.body.encode(), m.id))
            resent += 1
        if resent:
            log.warning("resent after restart", incident_id=rec.id, messages=resent)

    def _subject_of(self, m: Message) -> str:
        s = self.subjects
        if isinstance(m, DispatchOrder):
            return s.order(m.unit)
        if isinstance(m, Broadcast):
            return s.talkgroup(m.talkgroup, m.exercise)
        assert isinstance(m, IncidentEvent)
        return s.incident_event(m.incident_id, m.event.value)

    async def _follow(self, it: Any) -> None:
        """Other replicas' writes: adopt records newer than ours.

        The watch is read without the lock, into a queue; each time the lock is ours, every record
        queued meanwhile is applied (`_adopt`). Taking the lock once per record, as before, starved the
        watch under load: the lock is first come, first served, and the worker takes it again for its
        next batch at once, so about one record got in per batch and memory fell further and further
        behind the buckets (more conflicts, and stale claims that looked like orphans).

        A watch that fails is opened again after WATCH_RETRY_S: its first pass brings every record as it
        is now, adopted like any change (newer revisions only), so what changed meanwhile comes in."""
        queued: deque[Any] = deque()
        more = asyncio.Event()
        adopter = asyncio.create_task(self._adopt(queued, more))
        try:
            while True:
                try:
                    async for rec in it:
                        if rec is None:
                            continue
                        if not isinstance(rec, Deleted) and self._known_rev(type(rec), rec.id) >= rec.rev:
                            continue  # our own write coming back, or older
                        queued.append(rec)
                        more.set()
                    if self._stopping:
                        return
                    log.warning("bucket watch ended: opening it again", retry_s=WATCH_RETRY_S)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("bucket watch failed: opening it again", retry_s=WATCH_RETRY_S)
                await asyncio.sleep(WATCH_RETRY_S)
                try:
                    it = self.store.watch(known=self._known_rev).__aiter__()
                except Exception:
                    log.exception("could not open the bucket watch again")
                    it = _failed_watch()
        finally:
            await cancel_and_wait([adopter])

    async def _adopt(self, queued: "deque[Any]", more: asyncio.Event) -> None:
        while True:
            await more.wait()
            more.clear()
            async with self.lock:
                while queued:
                    rec = queued.popleft()
                    try:
                        self._adopt_one(rec)
                    except Exception:
                        # the core may have changed records in place before it failed: rebuild from the buckets
                        log.exception("could not adopt a record from the bucket watch", record=getattr(rec, "id", None))
                        await self._recover(None)

    def _adopt_one(self, rec: Any) -> None:
        if isinstance(rec, Deleted):
            self._forget_deleted(rec)
            return
        # again: while it waited, a decision may have written (or closed) the record; then only a
        # position held in memory is owed (below), the record is not
        if self._known_rev(type(rec), rec.id) < rec.rev:
            # under the lock no write of ours is in flight, so a newer unit, or a newer open incident or
            # one we hold, is somebody else's (a replica that missed our hello). Not before: our own
            # write's echo can beat its answer. Not a closed incident we no longer hold: a watch opened
            # again brings every one of those, ours included.
            if isinstance(rec, UnitRec) or rec.is_open or rec.id in self.state.incidents:
                self.share("bucket watch")
            decide(self.state, Loaded(rec), self.clock())
        if isinstance(rec, UnitRec) and rec.id in self._unflushed:
            # another replica wrote the unit (a claim) over a position we hold in memory only
            p = self._unflushed.pop(rec.id)
            if rec.fix_time is None or rec.fix_time < p.time:
                self.submit_input(PositionIn(p))

    def _known_rev(self, kind: type, key: str) -> int:
        """The revision held in memory (-1: none): the bucket watch drops changes at or below it
        unparsed, as `_follow` would after parsing them."""
        if kind is UnitRec:
            cur: UnitRec | IncidentRec | None = self.state.units.get(key)
        else:
            cur = self.state.incidents.get(key)
            if cur is None:
                return self._closed.get(key, -1)  # an incident we closed: its closing write or older
        return -1 if cur is None else cur.rev

    def _forget_deleted(self, d: Deleted) -> None:
        """An incident another replica created and then undid: drop it, and the alert ids its record
        brought into `seen`, or their redelivery would be taken for a replay."""
        if d.kind is not IncidentRec:
            return
        cur = self.state.incidents.get(d.id)
        if cur is None or cur.rev >= d.rev:
            return
        self.state.forget_incident(d.id)
        for aid in cur.alert_ids:
            if self.state.seen.get(aid) == cur.updated_at:
                self.state.seen.pop(aid, None)

    async def run_timers(self, every_s: float = 0.1) -> None:
        """Fire acknowledgement deadlines (also those that passed while the engine was down)."""
        last = time.monotonic()
        while True:
            try:
                nd = self.state.next_deadline()
                if (nd is not None and nd <= self.clock()) or time.monotonic() - last >= 5.0:
                    last = time.monotonic()
                    if await self._trusted():  # no deadline is judged on a half-changed state
                        await self.apply(Tick())  # also forgets old message ids and frees orphaned units
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("timer tick failed")
            await asyncio.sleep(every_s)

    def start_timers(self) -> None:
        self._tasks.append(asyncio.create_task(self.run_timers()))

    async def stop(self, drain_s: float = 5.0) -> None:
        """Finish the queued decisions (what is left is redelivered by the broker), store the
        positions held in memory, wait for the broker to confirm what was published."""
        self._stopping = True
        try:
            await asyncio.wait_for(self.drained(), drain_s)
        except TimeoutError:
            log.warning("stopping with inputs still queued", queued=len(self._queue) + len(self._replies))
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
            self._worker = None
        try:
            await self.flush_positions()
        except Exception:
            log.exception("could not store the last positions")
        deadline = time.monotonic() + 5.0
        while self._confirming and time.monotonic() < deadline:  # an acknowledgement refused: its re-send
            await asyncio.wait(list(self._confirming), timeout=max(0.0, deadline - time.monotonic()))
        await cancel_and_wait(self._tasks)
        self._tasks.clear()


@dataclass
class _Job:
    """One input waiting for a decision."""

    subject: str
    data: bytes
    redelivered: bool
    settle: Settle | None
    inp: Input | None = None
    msg_id: str | None = None
    known: bool = False  # its message id was seen before its first attempt
    tried: bool = False  # a first attempt was made (in a batch)
    keys: list[tuple[str, str]] = field(default_factory=list)  # records its decision touched
    messages: list[Publish] = field(default_factory=list)  # what its decision publishes
    failed: bool = False  # its batch group was undone: decided again on its own
    settled: bool = False


async def _failed_watch() -> Any:
    """A watch that fails at once (the store could not open one): `_follow` tries again later."""
    raise ConnectionError("no bucket watch")
    yield  # pragma: no cover - makes this an async generator


PHASES = 3


class _SlowClaims(Conflict):
    """The unit claims took too long to store (`EngineShell._claims_too_slow`): undone, and the decision
    taken again, as after a conflict."""

    def __str__(self) -> str:
        return f"the unit claims took more than {ORPHAN_GRACE.total_seconds() / 2:.0f} s to store ({self.rec.id} first)"


def _phase(rec: UnitRec | IncidentRec) -> int:
    """When a record is written among a decision's (or a batch's): 0 units, 1 incidents that exist,
    2 new incidents.

    Units first: losing a unit to another replica must fail before an incident is written, and the
    decision is then taken again on what the buckets hold. (Releases written after the incidents were
    tried and taken back: a release that then lost its unit to the other replica had to either undo
    incidents the other replica may have built on, or assume the unit was released by somebody else,
    which left units holding orders of closed incidents when that somebody's write was undone.)"""
    if isinstance(rec, UnitRec):
        return 0
    return 1 if rec.rev != 0 else 2


def _takes_order(rec: UnitRec | IncidentRec, prev: UnitRec | IncidentRec | None) -> bool:
    """Is `rec` a unit whose order was taken away (released, or replaced) since `prev`?"""
    return isinstance(rec, UnitRec) and isinstance(prev, UnitRec) and prev.order is not None and prev.order != rec.order


def _releases(saves: list[UnitRec | IncidentRec], before: Journal) -> bool:
    """Does the decision take an order away from a unit (it is released, or its order replaced)?"""
    return any(_takes_order(rec, before.get(("u", rec.id))) for rec in saves)


def _releasing_groups(saves: dict[tuple[str, str], UnitRec | IncidentRec], before: Journal, group: dict[tuple[str, str], int]) -> set[int]:
    """The groups of a batch (decisions that share a record) that take an order away from a unit and
    write something else with it."""
    size: dict[int, int] = {}
    for k in saves:
        size[group[k]] = size.get(group[k], 0) + 1
    # a release alone (the orphan sweep) has nothing to go with
    return {group[k] for k, rec in saves.items() if _takes_order(rec, before.get(k)) and size[group[k]] > 1}


def _atomic_chunks(saves: dict[tuple[str, str], UnitRec | IncidentRec], group: dict[tuple[str, str], int], atomic: set[int],
                   most: int = ATOMIC_MAX) -> list[list[tuple[str, str]]]:
    """The keys of the `atomic` groups, cut into atomic batches of at most `most` records, a group never
    cut in two (a group larger than that is a batch of its own, refused by the store: decided again one
    by one)."""
    by_group: dict[int, list[tuple[str, str]]] = {}
    for k in saves:
        if group[k] in atomic:
            by_group.setdefault(group[k], []).append(k)
    chunks: list[list[tuple[str, str]]] = []
    cur: list[tuple[str, str]] = []
    for keys in by_group.values():
        if cur and len(cur) + len(keys) > most:
            chunks.append(cur)
            cur = []
        cur += keys
    if cur:
        chunks.append(cur)
    return chunks


def _one_phase(rec: UnitRec | IncidentRec) -> int:
    """A lone engine's order of writes: all at once."""
    return 0


def _phases(saves: list[UnitRec | IncidentRec]) -> list[list[UnitRec | IncidentRec]]:
    """A decision's records in the order they are written (`_phase`), empty phases left out."""
    out = [[r for r in saves if _phase(r) == phase] for phase in range(PHASES)]
    return [g for g in out if g]


class _ActionMismatch(ValueError):
    pass


def _action_input(a: IncidentAction, tokens: list[str]) -> Input:
    """An operator's action as the core's input; the subject must name the same incident and action."""
    if a.incident_id != tokens[2] or a.action != tokens[3]:
        raise _ActionMismatch(
            f"action {a.action!r} on incident {a.incident_id!r} does not match subject {'.'.join(tokens)!r}"
        )
    who = f"{a.operator}@{a.console}"
    if a.action in ("close", "cancel"):
        return CloseIncident(incident_id=a.incident_id, by=who, disposition=a.disposition or a.reason, cancel=a.action == "cancel")
    if a.action == "reassign":
        return Reassign(incident_id=a.incident_id, by=who, reason=a.reason)
    return Escalate(incident_id=a.incident_id, by=who, reason=a.reason)


def _subject_mismatch(tokens: list[str], inp: Input) -> str | None:
    """The id in the subject and the one in the payload must agree."""
    if isinstance(inp, AlertIn):
        if tokens[1] == "camera" and inp.alert.camera != tokens[2]:
            return f"camera {inp.alert.camera!r} in the message does not match subject camera {tokens[2]!r}"
        return None
    if isinstance(inp, ReplyIn):
        unit = inp.reply.unit
    elif isinstance(inp, PositionIn):
        unit = inp.position.unit
    elif isinstance(inp, StatusIn):
        unit = inp.status.unit
    else:
        return None
    if unit != tokens[1]:
        return f"unit {unit!r} in the message does not match subject unit {tokens[1]!r}"
    return None


def _msg_id(inp: Input) -> str | None:
    if isinstance(inp, AlertIn):
        return inp.alert.id
    if isinstance(inp, ReplyIn):
        return inp.reply.id
    return None


def _ids(inp: Input) -> dict[str, str]:
    if isinstance(inp, AlertIn):
        return {"correlation_id": inp.alert.id, "event_id": inp.alert.event_id}
    if isinstance(inp, ReplyIn):
        return {"correlation_id": inp.reply.id, "incident_id": inp.reply.incident_id, "unit": inp.reply.unit}
    if isinstance(inp, PositionIn):
        return {"unit": inp.position.unit}
    if isinstance(inp, StatusIn):
        return {"unit": inp.status.unit}
    return {}


def _why_invalid(e: ValidationError, data: bytes) -> str:
    if any(err["type"] == "json_invalid" for err in e.errors()):
        return f"malformed JSON: {e.errors()[0]['msg']}"
    return f"invalid message: {describe_error(e)}"


def _loggable(m: Message) -> bool:
    return isinstance(m, IncidentEvent) or (isinstance(m, DispatchOrder) and m.action.value == "cancel")


def _log_after_send(msgs: list[Message]) -> None:
    """Log the messages just published once nats-py's flusher has written them to the socket: its
    wake-up is queued already, so a callback queued now runs after it. A line costs about 0.2 ms on an
    idle engine; written first, each one delayed the order it names (in the current context: the
    incident and correlation ids bound for the input)."""
    asyncio.get_running_loop().call_soon(_log_all, msgs)  # runs in a copy of the current context


def _log_all(msgs: list[Message]) -> None:
    for m in msgs:
        _log_publish(m)


def _log_publish(m: Message) -> None:
    if isinstance(m, IncidentEvent):
        log.info(m.event.value, incident_id=m.incident_id, seq=m.seq, state=m.state, unit=m.unit, detail=m.detail, exercise=m.exercise)
    elif isinstance(m, DispatchOrder) and m.action.value == "cancel":
        log.info("order withdrawn", incident_id=m.incident_id, unit=m.unit, order_id=m.order_id, reason=m.reason)
