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
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import structlog
from pydantic import ValidationError

from dispatch.core.decide import (
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
)
from dispatch.core.records import IncidentRec, UnitRec
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
from dispatch.store import Bus, Conflict, Deleted, Store
from dispatch.subjects import Subjects

log = structlog.get_logger("dispatch.engine")

MAX_CONFLICT_RETRIES = 8
RESEND_CLOSED_WITHIN_S = 600.0


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
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._confirming: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ inbound
    async def on_raw(self, subject: str, data: bytes, redelivered: bool = False) -> None:
        """Decode one message by its subject, hand it to the core; refuse what cannot be read."""
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
                await self.deadletter(subject, data, f"no handler for subject {subject}")
                return
        except ValidationError as e:
            await self.deadletter(subject, data, _why_invalid(e, data))
            return
        except _ActionMismatch as e:
            await self.deadletter(subject, data, str(e))
            return
        mismatch = _subject_mismatch(kind, inp)
        if mismatch is not None:
            # NATS permissions are per subject: a terminal may only speak for the unit its subject names
            await self.deadletter(subject, data, mismatch)
            return
        ids = _ids(inp)
        with structlog.contextvars.bound_contextvars(**ids):
            try:
                reason = await self.apply(inp)
            except Exception:
                # FastStream runs without a logger (see app.py): say why before the broker redelivers
                log.exception("decision failed", subject=subject)
                raise
            if reason is not None:
                await self.deadletter(subject, data, reason)

    async def apply(self, inp: Input) -> str | None:
        """Run one decision to completion. Returns a refusal reason, if the core refused the input."""
        msg_id = _msg_id(inp)
        sent: list[tuple[str, bytes, str, Any]] = []
        refreshed = False
        conflicts = 0
        first = True
        known_at_start = False
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
                # the core changes the state in place; keep the records as they were, to undo a failed attempt
                before = (dict(self.state.units), dict(self.state.incidents))
                try:
                    _, cmds = decide(self.state, inp, self.clock())
                except Exception:
                    await self._recover(msg_id)
                    raise
                if not cmds and getattr(inp, "redelivered", False):
                    log.info("redelivered input was handled before: nothing to do")
                refusal = next((c.reason for c in cmds if isinstance(c, Reject)), None)
                if refusal is not None:
                    # A refusal can come after the core changed records in place (a reply whose transition
                    # is refused after the unit was released): put them back, or the next decision would
                    # take a unit the buckets still give to an order.
                    self._restore(before)
                    if isinstance(inp, ReplyIn) and not refreshed:
                        # Another replica may have sent the order a moment ago (our bucket watch lags) or
                        # the refused attempt may have changed what it touched: read both again, decide again.
                        refreshed = True
                        await self._refresh(inp.reply.unit, inp.reply.incident_id)
                        continue
                    return refusal
                saves = [c.record for c in cmds if isinstance(c, Save)]
                try:
                    await self._persist(saves, before)
                except Conflict as e:
                    self.conflicts += 1
                    conflicts += 1
                    log.info("conflict", record=e.rec.id, detail=str(e))
                    if msg_id is not None:
                        self.state.seen.pop(msg_id, None)
                    await self._reload(saves)
                    continue
                except Exception:
                    await self._recover(msg_id)
                    raise
                for c in cmds:
                    if isinstance(c, Publish):
                        sent.append(await self._publish(c.message))
                        _log_publish(c.message)
                break
        else:
            async with self.lock:
                await self._recover(msg_id)
            raise RuntimeError(f"gave up after {MAX_CONFLICT_RETRIES} conflicting writes")
        if sent:
            # The broker's acknowledgements are awaited in the background: the decision is durable
            # already (the incident's outbox holds these messages until the next decision), and the
            # next input need not wait one more round trip.
            task = asyncio.create_task(self._confirm(sent))
            self._confirming.add(task)
            task.add_done_callback(self._confirming.discard)
        return None

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

    async def _persist(
        self,
        saves: list[UnitRec | IncidentRec],
        before: tuple[dict[str, UnitRec], dict[str, IncidentRec]] = ({}, {}),
    ) -> None:
        """Write a decision's records; if any write fails, undo the ones that succeeded, then raise.

        Keys are written one by one, so without the undo a decision that loses one record to another
        replica would leave the others claimed: a unit held by an order that was never sent, or an
        incident nobody opened.
        """
        written: list[tuple[UnitRec | IncidentRec, int]] = []
        try:
            # unit claims first: losing a unit to another replica must fail before the incident is written
            for group in ([r for r in saves if isinstance(r, UnitRec)], [r for r in saves if isinstance(r, IncidentRec)]):
                if not group:
                    continue
                results = await asyncio.gather(*(self.store.save(r) for r in group), return_exceptions=True)
                failed: BaseException | None = None
                for rec, res in zip(group, results):
                    if isinstance(res, BaseException):
                        failed = failed or res
                    else:
                        written.append((rec, res))
                        self.state.stored(rec, res)
                if failed is not None:
                    raise failed
        except Exception:
            await self._undo(written, before)
            raise

    async def _undo(
        self, written: list[tuple[UnitRec | IncidentRec, int]], before: tuple[dict[str, UnitRec], dict[str, IncidentRec]]
    ) -> None:
        for rec, rev in written:
            prev = (before[0] if isinstance(rec, UnitRec) else before[1]).get(rec.id)
            try:
                if prev is None:
                    await self.store.delete(type(rec), rec.id, rev)  # an incident this attempt created
                else:
                    await self.store.save(prev.model_copy(update={"rev": rev}))
            except Exception as e:  # somebody wrote it since: their version stands
                log.warning("undo failed", record=rec.id, detail=str(e))

    def _restore(self, before: tuple[dict[str, UnitRec], dict[str, IncidentRec]]) -> None:
        """Put back every unit and incident record a refused decision replaced in memory."""
        units, incidents = before
        for uid, rec in units.items():
            if self.state.units.get(uid) is not rec:
                self.state.put_unit(rec)
        for iid in [i for i in self.state.incidents if i not in incidents]:
            self.state.forget_incident(iid)  # opened by the refused decision
        for iid, rec in incidents.items():
            if self.state.incidents.get(iid) is not rec:
                self.state.forget_incident(iid)
                self.state.put_incident(rec)

    async def _refresh(self, unit_id: str, incident_id: str) -> None:
        """Replace one unit and one incident by what the buckets hold now."""
        if unit_id in self.state.units:
            unit = await self.store.get(UnitRec, unit_id)
            if unit is not None:
                self.state.put_unit(unit)  # type: ignore[arg-type]
        inc = await self.store.get(IncidentRec, incident_id)
        self.state.forget_incident(incident_id)
        if inc is not None:
            self.state.put_incident(inc)  # type: ignore[arg-type]

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
            log.warning("state rebuilt from the buckets after a failed decision", units=len(fresh.units), open=len(fresh.incidents))
        except Exception:
            log.exception("could not rebuild the state")

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

    async def _publish(self, m: Message) -> tuple[str, bytes, str, Any]:
        s = self.subjects
        if isinstance(m, DispatchOrder):
            subject = s.order(m.unit)
        elif isinstance(m, Broadcast):
            subject = s.talkgroup(m.talkgroup, m.exercise)
        elif isinstance(m, IncidentEvent):
            subject = s.incident_event(m.incident_id, m.event.value)
        else:  # pragma: no cover - the core only emits these three
            raise TypeError(type(m))
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
        it = self.store.watch().__aiter__()
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
        """Other replicas' writes: adopt records newer than ours."""
        try:
            async for rec in it:
                if rec is None:
                    continue
                if isinstance(rec, Deleted):
                    async with self.lock:
                        self._forget_deleted(rec)
                    continue
                table = self.state.units if isinstance(rec, UnitRec) else self.state.incidents
                cur = table.get(rec.id)
                if cur is not None and cur.rev >= rec.rev:
                    continue  # our own write coming back, or older
                async with self.lock:
                    decide(self.state, Loaded(rec), self.clock())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("bucket watch failed")

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
                    await self.apply(Tick())  # also forgets old message ids and frees orphaned units
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("timer tick failed")
            await asyncio.sleep(every_s)

    def start_timers(self) -> None:
        self._tasks.append(asyncio.create_task(self.run_timers()))

    async def stop(self) -> None:
        if self._confirming:
            await asyncio.wait(list(self._confirming), timeout=5.0)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()


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


def _log_publish(m: Message) -> None:
    if isinstance(m, IncidentEvent):
        log.info(m.event.value, incident_id=m.incident_id, seq=m.seq, state=m.state, unit=m.unit, detail=m.detail, exercise=m.exercise)
    elif isinstance(m, DispatchOrder) and m.action.value == "cancel":
        log.info("order withdrawn", incident_id=m.incident_id, unit=m.unit, order_id=m.order_id, reason=m.reason)
