"""The routing engine's pure core: `decide(state, event, now) -> (state, commands)`.

No clock, no I/O, no NATS: the shell passes the time in, then carries out the
commands (save records with revision checks, publish messages). The state is
an in-memory view of the key-value buckets plus indexes derived from it; it is
updated in place and returned, so the shell owns exactly one copy.

Rules (DESIGN.md, each tuned by the district policy):
1. correlate alerts of one place and kind within a window into one incident;
2. choose the fitting, available unit with a fresh position and the smallest
   travel time, and explain the choice;
3. an order not acknowledged in time, or declined, goes to the next unit;
4. no candidate left, or too many failures: talkgroup broadcast + escalated;
5. a priority-1 incident may pre-empt a unit from a low-priority one, which is
   re-queued;
6. every decision is an incident event.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Union

from dispatch.core.lifecycle import (
    IncidentTrigger,
    TransitionRefused,
    UnitTrigger,
    incident_next,
    unit_next,
)
from dispatch.core.records import (
    WAITING_INCIDENT_STATES,
    Attempt,
    AttemptOutcome,
    IncidentRec,
    IncidentState,
    OutboxItem,
    UnitRec,
    UnitState,
)
from dispatch.core.selection import EARTH_M_PER_DEG, Choice, ModeGrids, Router, UnitGrid, choose, straight_m
from dispatch.events import (
    Alert,
    AlertPhase,
    Area,
    Broadcast,
    BroadcastReason,
    CapCertainty,
    DispatchOrder,
    Explanation,
    IncidentEvent,
    IncidentEventKind,
    Message,
    OrderAction,
    OrderReply,
    ReplyKind,
    UnitAvailability,
    UnitKind,
    UnitPosition,
    UnitStatus,
    new_id,
)

DEFAULT_SPEEDS_KMH = {"foot": 5.0, "bicycle": 15.0, "motorbike": 35.0, "car": 40.0}
SEEN_TTL = timedelta(hours=1)
SWEEP_EVERY = timedelta(seconds=10)
# a unit claim is written before its incident, and the shell undoes claims that took more than half of
# this to store (dispatch/engine.py `_claims_too_slow`): a claim older than this that no incident holds
# is an orphan
ORPHAN_GRACE = timedelta(seconds=30)
ALERT_IDS_KEPT = 20
SKIPPED_LIMIT = 12  # units ruled out that an explanation names
GRID_CELL_M = 300.0  # grid cell side without a district extent to size it by
GRID_CELL_MIN_M, GRID_CELL_MAX_M = 100.0, 300.0
UNITS_PER_CELL = 2.0  # all modes together: a cell holds about one unit of two of the four modes

# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class AlertIn:
    alert: Alert
    redelivered: bool = False  # the broker delivers it again: a repeat is expected, not a replay


@dataclass(frozen=True)
class ReplyIn:
    reply: OrderReply
    redelivered: bool = False


@dataclass(frozen=True)
class PositionIn:
    position: UnitPosition


@dataclass(frozen=True)
class StatusIn:
    status: UnitStatus


@dataclass(frozen=True)
class Tick:
    """Time passes: fire due acknowledgement deadlines."""


@dataclass(frozen=True)
class Loaded:
    """A record read from a bucket (start-up, another replica's write, a conflict)."""

    record: UnitRec | IncidentRec


@dataclass(frozen=True)
class CloseIncident:
    incident_id: str
    by: str
    disposition: str = ""
    cancel: bool = False


@dataclass(frozen=True)
class Reassign:
    """Withdraw the incident from its unit (not asked again) and choose another."""

    incident_id: str
    by: str
    reason: str = ""


@dataclass(frozen=True)
class Escalate:
    """A supervisor escalates by hand: talkgroup broadcast and escalated event."""

    incident_id: str
    by: str
    reason: str = ""


Input = Union[AlertIn, ReplyIn, PositionIn, StatusIn, Tick, Loaded, CloseIncident, Reassign, Escalate]

# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Save:
    record: UnitRec | IncidentRec


@dataclass(frozen=True)
class Publish:
    message: DispatchOrder | Broadcast | IncidentEvent
    data: bytes | None = None  # the message as JSON, when the core serialised it already (for the outbox)


@dataclass(frozen=True)
class Reject:
    reason: str


Command = Union[Save, Publish, Reject]

# --------------------------------------------------------------------------- state


class EngineState:
    """Units, open incidents and the indexes the rules need."""

    def __init__(self, district: Any, graph: Any | None = None) -> None:
        self.district = district
        self.policy = district.policy
        streets = getattr(district, "streets", None)
        speeds = dict(DEFAULT_SPEEDS_KMH)
        if streets is not None:
            speeds.update({str(k): v for k, v in streets.speeds_kmh.items()})
        self.router = Router(graph, speeds)
        cell_m = grid_cell_m(district)
        self.grid = UnitGrid(cell_m=cell_m, ref_lat=district.center.lat)  # every unit with a position
        self.free = ModeGrids(cell_m=cell_m, ref_lat=district.center.lat)  # the available ones: what choosing walks
        self._allows: dict[tuple[str, str], bool] = {}
        self.units: dict[str, UnitRec] = {}
        self.incidents: dict[str, IncidentRec] = {}
        self.by_event: dict[str, str] = {}
        self._corr_cell_deg = max(self.policy.correlation_radius_m, 1.0) / EARTH_M_PER_DEG
        self.corr: dict[tuple[Any, ...], set[str]] = {}
        self.waiting: set[str] = set()
        self.deadlines: list[tuple[datetime, str, str]] = []
        self.seen: OrderedDict[str, datetime] = OrderedDict()
        self.counters: Counter[str] = Counter()
        self.last_sweep: datetime | None = None
        # while set, the first replacement of each record keeps what it replaced (None: did not exist),
        # so the shell can undo a decision (or a batch of them) without copying the whole state
        self.journal: dict[tuple[str, str], UnitRec | IncidentRec | None] | None = None
        for u in district.units:
            self.put_unit(
                UnitRec(id=u.id, callsign=u.callsign, kind=u.kind, mode=u.mode, talkgroup=u.talkgroup)
            )

    # -- index upkeep, used by decisions and by records loaded from buckets
    def put_unit(self, rec: UnitRec) -> None:
        j = self.journal
        if j is not None and ("u", rec.id) not in j:
            j[("u", rec.id)] = self.units.get(rec.id)
        self.units[rec.id] = rec
        if rec.lat is not None and rec.lon is not None:
            self.grid.move(rec.id, rec.lat, rec.lon)
            if rec.state is UnitState.available:
                self.free.move(rec.id, rec.lat, rec.lon, str(rec.mode))
            else:
                self.free.remove(rec.id)
        else:
            self.free.remove(rec.id)

    def allows(self, kind: Any, unit_kind: Any) -> bool:
        """The policy's kind rule, remembered (the policy does not change while the engine runs)."""
        key = (kind, unit_kind)
        hit = self._allows.get(key)
        if hit is None:
            hit = self._allows[key] = self.policy.allows(kind, unit_kind)
        return hit

    def _corr_keys(self, rec: IncidentRec) -> list[tuple[Any, ...]]:
        c = self._corr_cell_deg
        keys: list[tuple[Any, ...]] = [
            (rec.exercise, rec.kind, "cell", math.floor(rec.place.lat / c), math.floor(rec.place.lon / c))
        ]
        if rec.camera:
            keys.append((rec.exercise, rec.kind, "cam", rec.camera))
        return keys

    def put_incident(self, rec: IncidentRec) -> None:
        old = self.incidents.get(rec.id)
        j = self.journal
        if j is not None and ("i", rec.id) not in j:
            j[("i", rec.id)] = old
        if not rec.is_open:
            self.incidents.pop(rec.id, None)
            self.waiting.discard(rec.id)
            for k in self._corr_keys(rec):
                self.corr.get(k, set()).discard(rec.id)
            # the record in memory may know event ids the closing one does not (an alert joined here
            # while another replica closed it): drop those too, or they would point at nothing
            for e in rec.event_ids + (old.event_ids if old is not None else ()):
                if self.by_event.get(e) == rec.id:
                    del self.by_event[e]
            return
        self.incidents[rec.id] = rec
        if old is None:
            for k in self._corr_keys(rec):
                self.corr.setdefault(k, set()).add(rec.id)
        elif old.event_ids != rec.event_ids:
            for e in old.event_ids:
                if self.by_event.get(e) == rec.id:
                    del self.by_event[e]
        for e in rec.event_ids:
            self.by_event[e] = rec.id
        if rec.state in WAITING_INCIDENT_STATES:
            self.waiting.add(rec.id)
        else:
            self.waiting.discard(rec.id)
        if rec.deadline is not None and rec.order is not None and (old is None or old.deadline != rec.deadline):
            heapq.heappush(self.deadlines, (rec.deadline, rec.id, rec.order))

    def forget_incident(self, incident_id: str) -> None:
        """Drop an incident from memory (a failed decision created it, or the bucket lost it)."""
        j = self.journal
        if j is not None and ("i", incident_id) not in j:
            j[("i", incident_id)] = self.incidents.get(incident_id)
        rec = self.incidents.pop(incident_id, None)
        self.waiting.discard(incident_id)
        if rec is None:
            return
        for k in self._corr_keys(rec):
            self.corr.get(k, set()).discard(incident_id)
        for e in rec.event_ids:
            if self.by_event.get(e) == incident_id:
                self.by_event.pop(e, None)

    def begin(self) -> dict[tuple[str, str], UnitRec | IncidentRec | None]:
        """Start keeping what decisions replace; returns the journal `undo` takes."""
        self.journal = {}
        return self.journal

    def end(self) -> None:
        self.journal = None

    def undo(self, journal: dict[tuple[str, str], UnitRec | IncidentRec | None]) -> None:
        """Put back every record the journal names as it was before (opened incidents are dropped)."""
        saved, self.journal = self.journal, None
        try:
            for (table, key), old in journal.items():
                if table == "u":
                    if old is not None and self.units.get(key) is not old:
                        self.put_unit(old)
                else:
                    cur = self.incidents.get(key)
                    if cur is old:
                        continue
                    self.forget_incident(key)
                    if old is not None:
                        self.put_incident(old)
        finally:
            self.journal = saved

    def stored(self, rec: UnitRec | IncidentRec, rev: int) -> None:
        """The shell wrote `rec` and the bucket gave it revision `rev`."""
        table = self.units if isinstance(rec, UnitRec) else self.incidents
        cur = table.get(rec.id)
        if cur is not None and cur.rev < rev:
            table[rec.id] = cur.model_copy(update={"rev": rev})

    def next_deadline(self) -> datetime | None:
        return self.deadlines[0][0] if self.deadlines else None

    def open_incidents(self) -> list[IncidentRec]:
        return sorted(self.incidents.values(), key=lambda i: (i.priority, i.opened_at))


def grid_cell_m(district: Any) -> float:
    """Grid cells sized so that a cell holds a few units of each travel mode: ring walks then stop
    close to the answer in a dense district and do not walk many empty cells in a sparse one."""
    n = len(getattr(district, "units", ()))
    try:
        lat_lo, lon_lo, lat_hi, lon_hi = district.bbox
    except Exception:
        return GRID_CELL_M
    h = (lat_hi - lat_lo) * EARTH_M_PER_DEG
    w = (lon_hi - lon_lo) * EARTH_M_PER_DEG * math.cos(math.radians((lat_lo + lat_hi) / 2))
    if n == 0 or h <= 0 or w <= 0:
        return GRID_CELL_M
    return min(GRID_CELL_MAX_M, max(GRID_CELL_MIN_M, math.sqrt(UNITS_PER_CELL * w * h / n)))


# --------------------------------------------------------------------------- the decision



def sweep_due(state: EngineState, now: datetime) -> bool:
    """A tick at `now` runs the orphan sweep."""
    return state.last_sweep is None or now - state.last_sweep >= SWEEP_EVERY


def orphans(state: EngineState, now: datetime) -> list[UnitRec]:
    """Units holding, for longer than the grace period, an order that no incident in `state` holds."""
    out = []
    for u in state.units.values():
        if u.order is None or u.updated is None or now - u.updated < ORPHAN_GRACE:
            continue
        inc = state.incidents.get(u.incident) if u.incident else None
        if inc is not None and inc.order == u.order:
            continue
        out.append(u)
    return out

def decide(state: EngineState, event: Input, now: datetime) -> tuple[EngineState, list[Command]]:
    d = _Decision(state, now)
    try:
        d.handle(event)
    except _Refuse as r:
        state.counters["rejected"] += 1
        # a refusal ends the decision before any change, except bookkeeping that must stick
        return state, [Reject(str(r))]
    return state, d.commands()


class _Refuse(Exception):
    pass


@dataclass
class _Decision:
    s: EngineState
    now: datetime
    dirty_units: dict[str, None] = field(default_factory=dict)
    dirty_incidents: dict[str, None] = field(default_factory=dict)
    out: list[tuple[str | None, Message]] = field(default_factory=list)

    # -- plumbing
    def commands(self) -> list[Command]:
        per_incident: dict[str, list[OutboxItem]] = {}
        bodies: list[str] = []
        for inc_id, msg in self.out:
            body = msg.model_dump_json()  # once: for the outbox and for sending
            bodies.append(body)
            if inc_id is None:
                continue
            kind = "order" if isinstance(msg, DispatchOrder) else "broadcast" if isinstance(msg, Broadcast) else "event"
            per_incident.setdefault(inc_id, []).append(OutboxItem(type=kind, body=body))
        cmds: list[Command] = []
        for uid in self.dirty_units:
            cmds.append(Save(self.s.units[uid]))
        for iid in self.dirty_incidents:
            rec = self._inc(iid)
            rec = rec.model_copy(update={"outbox": tuple(per_incident.get(iid, ()))})
            self._put_inc(rec, mark=False)
            cmds.append(Save(rec))
        cmds.extend(Publish(m, b.encode()) for (_, m), b in zip(self.out, bodies))  # type: ignore[arg-type]
        return cmds

    def _inc(self, iid: str) -> IncidentRec:
        rec = self.s.incidents.get(iid) or self._closed.get(iid)
        assert rec is not None, iid
        return rec

    @property
    def _closed(self) -> dict[str, IncidentRec]:
        if not hasattr(self, "_closed_store"):
            self._closed_store: dict[str, IncidentRec] = {}
        return self._closed_store

    def _put_inc(self, rec: IncidentRec, mark: bool = True) -> None:
        if not rec.is_open:
            self._closed[rec.id] = rec
        self.s.put_incident(rec)
        if mark:
            self.dirty_incidents[rec.id] = None

    def _put_unit(self, rec: UnitRec, touch: bool = True) -> None:
        """`touch=False` for a position alone, or a unit saved back unchanged: `updated` stays the time
        of the unit's last change of state or order, which the orphan sweep's grace runs from (a unit
        left holding a lost order while reporting every 10 s would otherwise never be freed)."""
        self.s.put_unit(rec.model_copy(update={"updated": self.now}) if touch else rec)
        self.dirty_units[rec.id] = None

    def _emit(self, inc: IncidentRec, event: IncidentEventKind, **fields: Any) -> IncidentRec:
        inc = inc.model_copy(update={"seq": inc.seq + 1, "updated_at": self.now})
        ev = IncidentEvent(
            time=self.now,
            exercise=inc.exercise,
            incident_id=inc.id,
            seq=inc.seq,
            event=event,
            state=inc.state.value,
            kind=inc.kind,
            priority=inc.priority,
            place=inc.place,
            camera=inc.camera,
            **fields,
        )
        self.out.append((inc.id, ev))
        self._put_inc(inc)
        return inc

    def _send(self, inc_id: str | None, msg: Message) -> None:
        self.out.append((inc_id, msg))

    def _seen(self, msg_id: str, redelivered: bool) -> bool:
        """True if this message id was handled before; a fresh replay is refused."""
        if msg_id in self.s.seen:
            if redelivered:
                return True
            raise _Refuse(f"replayed message id {msg_id}: already handled")
        return False

    def _remember(self, msg_id: str) -> None:
        self.s.seen[msg_id] = self.now

    # -- dispatch on input
    def handle(self, ev: Input) -> None:
        if isinstance(ev, AlertIn):
            self.on_alert(ev.alert, ev.redelivered)
        elif isinstance(ev, ReplyIn):
            self.on_reply(ev.reply, ev.redelivered)
        elif isinstance(ev, PositionIn):
            self.on_position(ev.position)
        elif isinstance(ev, StatusIn):
            self.on_status(ev.status)
        elif isinstance(ev, Tick):
            self.on_tick()
        elif isinstance(ev, Loaded):
            self.on_loaded(ev.record)
        elif isinstance(ev, CloseIncident):
            self.on_close(ev)
        elif isinstance(ev, Reassign):
            self.on_reassign(ev)
        elif isinstance(ev, Escalate):
            self.on_escalate(ev)
        else:  # pragma: no cover - the type union is closed
            raise TypeError(f"unknown input {ev!r}")

    # -- rule 1: alerts become incidents
    def on_alert(self, a: Alert, redelivered: bool) -> None:
        if self._seen(a.id, redelivered):
            return
        district = self.s.district
        cam = None
        if a.camera is not None:
            cam = district.camera(a.camera)
            if cam is None:
                raise _Refuse(f"unknown camera {a.camera!r}: not in district {district.name!r}")
        if a.area is not None:
            lat, lon, desc = a.area.lat, a.area.lon, a.area.description
            if not district.contains(lat, lon):
                raise _Refuse(f"position ({lat:.6f}, {lon:.6f}) is outside district {district.name!r}")
        else:
            assert cam is not None  # the contract requires a camera or an area
            lat, lon, desc = cam.position.lat, cam.position.lon, cam.name
        self._remember(a.id)
        self.s.counters["alerts"] += 1
        place = Area(lat=lat, lon=lon, radius_m=a.area.radius_m if a.area else 0.0, description=desc or "")

        if a.confirms is not None:
            iid = self.s.by_event.get(a.confirms)
            if iid is not None and iid in self.s.incidents:
                self._confirm(self._inc(iid), a)
                return
        iid = self.s.by_event.get(a.event_id)
        if iid is not None and iid not in self.s.incidents:
            self.s.by_event.pop(a.event_id, None)  # its incident is closed or gone: the event starts afresh
            iid = None
        if iid is not None:
            self._update(self._inc(iid), a)
            return
        if a.phase is AlertPhase.end:
            # the end of an event whose incident is closed or unknown: nothing to do
            return
        match = self._correlate(a, place)
        if match is not None:
            inc = self._join(match, a)
            self._emit(inc, IncidentEventKind.merged, alert_ids=(a.id,), detail=f"alert {a.event_id} joins the incident")
            return
        self._open(a, place)

    def _join(self, inc: IncidentRec, a: Alert) -> IncidentRec:
        upd: dict[str, Any] = {
            "alert_ids": (inc.alert_ids + (a.id,))[-ALERT_IDS_KEPT:],
            "alert_count": inc.alert_count + 1,
            "last_alert_at": self.now,
            "zones": tuple(dict.fromkeys(inc.zones + a.zones)),
        }
        if a.event_id not in inc.event_ids:
            upd["event_ids"] = inc.event_ids + (a.event_id,)
        if a.snapshot:
            upd["snapshot"] = a.snapshot
        if a.priority < inc.priority:
            upd["priority"] = a.priority
        rec = inc.model_copy(update=upd)
        self._put_inc(rec)
        return rec

    def _confirm(self, inc: IncidentRec, a: Alert) -> None:
        inc = self._join(inc, a)
        inc = inc.model_copy(update={"certainty": CapCertainty.Observed})
        self._put_inc(inc)
        who = a.operator or a.console or "an operator"
        self._emit(inc, IncidentEventKind.upgraded, alert_ids=(a.id,), detail=f"confirmed by {who}")
        if inc.state in WAITING_INCIDENT_STATES and inc.unit is None:
            self._dispatch(self._inc(inc.id))

    def _update(self, inc: IncidentRec, a: Alert) -> None:
        before = inc.priority
        inc = self._join(inc, a)
        if inc.priority < before:
            self._emit(inc, IncidentEventKind.merged, alert_ids=(a.id,), detail=f"priority raised to {inc.priority}")

    def _correlate(self, a: Alert, place: Area) -> IncidentRec | None:
        s, pol = self.s, self.s.policy
        window = timedelta(seconds=pol.correlation_window_s)
        c = s._corr_cell_deg
        ci, cj = math.floor(place.lat / c), math.floor(place.lon / c)
        ids: set[str] = set()
        if a.camera:
            ids |= s.corr.get((a.exercise, a.kind, "cam", a.camera), set())
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                ids |= s.corr.get((a.exercise, a.kind, "cell", ci + di, cj + dj), set())
        best: tuple[float, str] | None = None
        for iid in ids:
            inc = s.incidents.get(iid)
            if inc is None or not inc.is_open or self.now - inc.last_alert_at > window:
                continue
            same_camera = a.camera is not None and inc.camera == a.camera
            if same_camera and (not a.zones or not inc.zones or set(a.zones) & set(inc.zones)):
                dist = 0.0
            else:
                dist = straight_m(place.lat, place.lon, inc.place.lat, inc.place.lon)
                if dist > pol.correlation_radius_m:
                    continue
            if best is None or (dist, iid) < best:
                best = (dist, iid)
        return s.incidents[best[1]] if best else None

    def _open(self, a: Alert, place: Area) -> None:
        rule = self.s.policy.rule(a.kind)
        inc = IncidentRec(
            id=new_id(),
            kind=a.kind,
            category=a.category if a.category is not None else rule.category,
            certainty=a.certainty,
            priority=a.priority,
            place=place,
            camera=a.camera,
            zones=a.zones,
            event_ids=(a.event_id,),
            alert_ids=(a.id,),
            alert_count=1,
            snapshot=a.snapshot,
            exercise=a.exercise,
            opened_at=self.now,
            last_alert_at=self.now,
            updated_at=self.now,
        )
        self.s.counters["incidents"] += 1
        inc = self._emit(inc, IncidentEventKind.opened, alert_ids=(a.id,), detail=_source_text(a))
        self._dispatch(inc)

    # -- rule 2: choose and order
    def _why_not(self, inc: IncidentRec) -> Any:
        pol = self.s.policy
        stale = timedelta(seconds=pol.stale_position_s)
        tried = inc.tried
        now = self.now
        exercise, kind = inc.exercise, inc.kind
        allows = self.s.allows
        available = UnitState.available
        fits = {k: allows(kind, k) for k in UnitKind}
        try:
            oldest = now - stale  # now - fix_time > stale exactly when fix_time < oldest (datetimes are exact)
        except OverflowError:  # a limit of thousands of years: nothing is stale
            oldest = datetime.min.replace(tzinfo=timezone.utc)

        def why_not(u: UnitRec) -> str | None:
            # the common case (a fitting unit) costs a few comparisons; reasons are only worded for refusals
            if u.exercise != exercise:
                return "not in this drill" if exercise else f"in drill {u.exercise}"
            if u.state is not available:
                return f"{u.state.value}" + (f" on incident {u.incident}" if u.incident else "")
            if not fits[u.kind]:  # every UnitKind is in `fits`
                return f"{u.kind.value} units do not take {kind.value} incidents"
            if tried and u.id in tried:
                return "already asked for this incident"
            fix = u.fix_time
            if fix is None or fix < oldest:
                age = "never" if u.fix_time is None else f"{(now - u.fix_time).total_seconds():.0f} s ago"
                return f"stale position (last fix {age}, limit {pol.stale_position_s:.0f} s)"
            return None

        return why_not

    def _choose(self, inc: IncidentRec, why_not: Any, busy_too: bool = False) -> Choice:
        """Choose among the available units (the grid of free units: busy ones cost nothing), or among
        all units for pre-emption. Busy units in the incident's own cell are still named in the
        explanation, as long as there is room."""
        s = self.s
        lat, lon = inc.place.lat, inc.place.lon
        c = choose(
            s.grid if busy_too else s.free, s.units, s.router, lat, lon, why_not, want=s.policy.max_candidates,
        )
        if not busy_too and len(c.skipped) < SKIPPED_LIMIT:
            for uid in sorted(s.grid.units_in_cell(lat, lon)):
                u = s.units.get(uid)
                if u is None or u.state is UnitState.available:
                    continue
                reason = why_not(u)
                if reason is not None:
                    c.skipped.append((uid, reason))
                    if len(c.skipped) >= SKIPPED_LIMIT:
                        break
        return c

    def _dispatch(self, inc: IncidentRec) -> None:
        """Give the incident to the best unit, pre-empt for priority 1, or escalate."""
        pol = self.s.policy
        if inc.failures >= pol.max_attempts and not inc.escalated:
            inc = self._escalate(inc, f"{inc.failures} units did not take it")
        choice = self._choose(inc, self._why_not(inc))
        victim = None
        if inc.priority == 1 and pol.preemption:
            victim = self._preemptable(inc, choice)
        if victim is not None:
            self._preempt(inc, victim)
            return
        if choice.chosen is not None:
            self._assign(inc, choice)
            return
        if not inc.escalated:
            self._escalate(inc, "no available unit fits this incident")
        elif inc.state is not IncidentState.escalated:
            inc = inc.model_copy(update={"state": incident_next(inc.state, IncidentTrigger.no_candidate)})
            self._put_inc(inc)

    def _preemptable(self, inc: IncidentRec, best: Choice) -> Choice | None:
        """A unit busy on a low-priority incident that would arrive clearly sooner than any free one."""
        pol = self.s.policy
        s = self.s
        base = self._why_not(inc)

        def why_not(u: UnitRec) -> str | None:
            if u.state not in (UnitState.assigned, UnitState.acknowledged, UnitState.en_route) or u.incident is None:
                return "not pre-emptable"
            other = s.incidents.get(u.incident)
            if other is None or other.priority not in pol.preemptable_priorities or other.exercise != inc.exercise:
                return "its incident may not be pre-empted"
            if other.unit != u.id or other.order != u.order or other.state not in (
                IncidentState.assigned, IncidentState.acknowledged, IncidentState.en_route
            ):
                return "its incident's record is not in step with the unit's yet"  # another replica's write in flight
            return base(u.model_copy(update={"state": UnitState.available}))

        alt = self._choose(inc, why_not, busy_too=True)
        if alt.chosen is None:
            return None
        if best.chosen is not None and alt.chosen.eta_s + pol.preempt_margin_s >= best.chosen.eta_s:
            return None
        alt.skipped = best.skipped + alt.skipped
        return alt

    def _explain(self, choice: Choice, preempted: str | None = None) -> Explanation:
        chosen = choice.chosen
        # validated in one call from plain dicts: pydantic builds every Candidate and Skipped inside it,
        # the same objects as their own constructors make, in half the time (model_construct is a
        # Python loop, slower still)
        cands = [
            {"unit": c.unit, "eta_s": round(c.eta_s, 1), "distance_m": round(c.straight_m, 1), "method": c.method}
            for c in choice.candidates
        ]
        skipped = [{"unit": u, "reason": r} for u, r in choice.skipped]
        if chosen is not None:
            for c in choice.candidates[1:]:
                why = f"{c.eta_s - chosen.eta_s:.0f} s slower ({c.eta_s:.0f} s vs {chosen.eta_s:.0f} s)"
                if c.straight_m < chosen.straight_m:
                    why += f", although nearer in a straight line ({c.straight_m:.0f} m vs {chosen.straight_m:.0f} m)"
                skipped.append({"unit": c.unit, "reason": why})
            how = "by road" if chosen.method == "road" else "in a straight line (no street graph)"
            note = f"{chosen.unit}: ETA {chosen.eta_s:.0f} s {how}, {chosen.straight_m:.0f} m away; {len(choice.candidates)} candidates weighed"
            if preempted:
                note += f"; taken off lower-priority incident {preempted}"
        else:
            note = "no unit can take it"
        return Explanation.model_validate(
            {"chosen": chosen.unit if chosen else None, "candidates": cands, "skipped": skipped, "note": note}
        )

    def _assign(self, inc: IncidentRec, choice: Choice, preempted: str | None = None) -> None:
        cand = choice.chosen
        assert cand is not None
        unit = self.s.units[cand.unit]
        pol = self.s.policy
        order_id = new_id()
        deadline = self.now + timedelta(seconds=pol.ack_timeout(inc.priority))
        explanation = self._explain(choice, preempted)
        route = self.s.router.route(unit, inc.place.lat, inc.place.lon)
        self._put_unit(
            unit.model_copy(
                update={"state": unit_next(unit.state, UnitTrigger.order_sent), "incident": inc.id, "order": order_id}
            )
        )
        inc = inc.model_copy(
            update={
                "state": incident_next(inc.state, IncidentTrigger.assign),
                "unit": unit.id,
                "order": order_id,
                "deadline": deadline,
                "attempts": inc.attempts + (Attempt(unit=unit.id, order_id=order_id, sent_at=self.now, deadline=deadline, eta_s=round(cand.eta_s, 1)),),
            }
        )
        self._put_inc(inc)
        self.s.counters["orders"] += 1
        self._send(
            inc.id,
            DispatchOrder(
                time=self.now,
                exercise=inc.exercise,
                order_id=order_id,
                incident_id=inc.id,
                unit=unit.id,
                attempt=len(inc.attempts),
                priority=inc.priority,
                kind=inc.kind,
                category=inc.category,
                place=inc.place,
                snapshot=inc.snapshot,
                route=route,
                eta_s=round(cand.eta_s, 1),
                ack_deadline=deadline,
                explanation=explanation,
            ),
        )
        self._emit(
            inc, IncidentEventKind.assigned, unit=unit.id, order_id=order_id, eta_s=round(cand.eta_s, 1),
            explanation=explanation, detail=explanation.note,
        )

    def _cancel_order(self, inc: IncidentRec, unit_id: str, order_id: str, reason: str) -> None:
        self._send(
            inc.id,
            DispatchOrder(
                time=self.now, exercise=inc.exercise, order_id=order_id, action=OrderAction.cancel,
                incident_id=inc.id, unit=unit_id, priority=inc.priority, kind=inc.kind, category=inc.category,
                place=inc.place, reason=reason,
            ),
        )

    def _release(self, unit_id: str, order_id: str, trigger: UnitTrigger) -> bool:
        """Free a unit from an order, if it still holds that order (another replica may have moved on)."""
        u = self.s.units.get(unit_id)
        if u is None:
            return False
        if u.order != order_id:
            # The decision goes on as if the unit had let go of the order. Saved back as it is, the unit's
            # revision check proves that against the bucket: a copy that only lags behind another
            # replica's claim loses the write, and the input is decided again on the records read back
            # (else the unit would keep the order in the bucket until the orphan sweep).
            self._put_unit(u, touch=False)  # journalled too: a batch groups decisions by the records they touch
            return False
        try:
            state = unit_next(u.state, trigger)
        except TransitionRefused:
            # records out of step (a write another replica cut short): the order is withdrawn all the same
            # (a release must not fail: a timeout that raises would stop every later deadline)
            state = _let_go(u.state)
            self.s.counters["forced_releases"] += 1
        self._put_unit(u.model_copy(update={"state": state, "incident": None, "order": None}))
        return True

    def _close_attempt(self, inc: IncidentRec, outcome: AttemptOutcome, reason: str = "") -> IncidentRec:
        attempts = tuple(
            a.model_copy(update={"outcome": outcome, "reason": reason}) if a.order_id == inc.order else a
            for a in inc.attempts
        )
        failures = inc.failures + (1 if outcome in (AttemptOutcome.declined, AttemptOutcome.timed_out) else 0)
        return inc.model_copy(update={"attempts": attempts, "failures": failures})

    # -- rule 4
    def _escalate(self, inc: IncidentRec, why: str) -> IncidentRec:
        pol = self.s.policy
        if inc.state in WAITING_INCIDENT_STATES:
            inc = inc.model_copy(update={"state": incident_next(inc.state, IncidentTrigger.no_candidate)})
        inc = inc.model_copy(update={"escalated": True})
        self._put_inc(inc)
        groups = [pol.escalation_talkgroup] + sorted(
            {u.talkgroup for u in self.s.district.units if pol.allows(inc.kind, u.kind)} - {pol.escalation_talkgroup}
        )
        text = (
            f"P{inc.priority} {inc.kind.value} at {inc.place.description or f'{inc.place.lat:.5f},{inc.place.lon:.5f}'}: "
            f"{why}. Any unit able to respond, answer."
        )
        for g in groups:
            self._send(
                inc.id,
                Broadcast(
                    time=self.now, exercise=inc.exercise, talkgroup=g, reason=BroadcastReason.escalation,
                    incident_id=inc.id, priority=inc.priority, kind=inc.kind, place=inc.place, text=text,
                ),
            )
        self.s.counters["escalations"] += 1
        return self._emit(inc, IncidentEventKind.escalated, detail=why)

    # -- rule 5
    def _preempt(self, inc: IncidentRec, alt: Choice) -> None:
        assert alt.chosen is not None
        victim_unit = self.s.units[alt.chosen.unit]
        other = self._inc(victim_unit.incident)  # type: ignore[arg-type]
        reason = f"taken for priority-{inc.priority} incident {inc.id}"
        self._cancel_order(other, victim_unit.id, victim_unit.order, reason)  # type: ignore[arg-type]
        self._release(victim_unit.id, victim_unit.order, UnitTrigger.withdrawn)  # type: ignore[arg-type]
        other = self._close_attempt(other, AttemptOutcome.preempted, reason)
        other = other.model_copy(
            update={"state": incident_next(other.state, IncidentTrigger.preempt), "unit": None, "order": None, "deadline": None}
        )
        other = self._emit(other, IncidentEventKind.preempted, unit=victim_unit.id, detail=reason)
        self._emit(other, IncidentEventKind.requeued, detail="looking for another unit")
        self.s.counters["preemptions"] += 1
        self._assign(self._inc(inc.id), alt, preempted=other.id)
        self._dispatch(self._inc(other.id))  # another free unit may take it now; else it waits

    # -- rule 3: replies and timeouts
    def on_reply(self, r: OrderReply, redelivered: bool) -> None:
        if self._seen(r.id, redelivered):
            return
        u = self.s.units.get(r.unit)
        if u is None:
            raise _Refuse(f"unknown unit {r.unit!r}: not in district {self.s.district.name!r}")
        inc = self.s.incidents.get(r.incident_id)
        # The unit's release is stored but not the incident's close: the store went away half-way through
        # this `cleared`'s first decision and the undo failed with it (a drill's NATS restart). The
        # incident still waits for this unit: the clearing is finished, the unit left as it is. This
        # replica's copy of the unit may only lag behind the bucket (another replica sent the order a
        # moment ago; two replicas left units holding orders of closed incidents): `_release` saves it
        # back unchanged, and its revision check decides which.
        half_cleared = (r.reply is ReplyKind.cleared and inc is not None and inc.order == r.order_id
                        and inc.unit == r.unit and u.order != r.order_id)
        if not half_cleared and (inc is None or inc.order != r.order_id or u.order != r.order_id):
            raise _Refuse(
                f"order {r.order_id} is not active for unit {r.unit} (it timed out, was withdrawn or finished)"
            )
        assert inc is not None
        self._remember(r.id)
        try:
            if half_cleared:
                new_i = incident_next(inc.state, IncidentTrigger.cleared)
                self._release(u.id, r.order_id, UnitTrigger.cleared)
                self._close_cleared(inc, u.id, r.reason, new_i)
                if u.order is None:
                    self._serve_waiting(u.id)
            elif r.reply is ReplyKind.ack:
                self._ack(inc, u)
            elif r.reply is ReplyKind.decline:
                self._decline(inc, u, r.reason or "declined")
            elif r.reply is ReplyKind.en_route:
                self._progress(inc, u, UnitTrigger.en_route, IncidentTrigger.en_route, IncidentEventKind.en_route)
            elif r.reply is ReplyKind.on_scene:
                self._progress(inc, u, UnitTrigger.on_scene, IncidentTrigger.on_scene, IncidentEventKind.on_scene)
            elif r.reply is ReplyKind.cleared:
                self._cleared(inc, u, r.reason)
        except TransitionRefused as e:
            raise _Refuse(f"reply {r.reply.value} from {r.unit}: {e}") from None

    def _ack(self, inc: IncidentRec, u: UnitRec) -> None:
        self._put_unit(u.model_copy(update={"state": unit_next(u.state, UnitTrigger.ack)}))
        inc = self._close_attempt(inc, AttemptOutcome.acknowledged)
        inc = inc.model_copy(update={"state": incident_next(inc.state, IncidentTrigger.ack), "deadline": None})
        self._emit(inc, IncidentEventKind.acknowledged, unit=u.id, order_id=inc.order)

    def _progress(self, inc: IncidentRec, u: UnitRec, ut: UnitTrigger, it: IncidentTrigger, ev: IncidentEventKind) -> None:
        new_u = unit_next(u.state, ut)
        new_i = incident_next(inc.state, it)
        if inc.state is IncidentState.assigned:  # moving without an explicit ack acknowledges
            inc = self._close_attempt(inc, AttemptOutcome.acknowledged)
        self._put_unit(u.model_copy(update={"state": new_u}))
        inc = inc.model_copy(update={"state": new_i, "deadline": None})
        self._emit(inc, ev, unit=u.id, order_id=inc.order)

    def _cleared(self, inc: IncidentRec, u: UnitRec, disposition: str) -> None:
        new_i = incident_next(inc.state, IncidentTrigger.cleared)  # refused before anything changes
        self._release(u.id, u.order, UnitTrigger.cleared)  # type: ignore[arg-type]
        self._close_cleared(inc, u.id, disposition, new_i)
        self._serve_waiting(u.id)

    def _close_cleared(self, inc: IncidentRec, unit_id: str, disposition: str, new_i: IncidentState) -> None:
        inc = self._close_attempt(inc, AttemptOutcome.done)
        inc = inc.model_copy(
            update={"state": new_i, "deadline": None, "closed_at": self.now, "disposition": disposition}
        )
        self._emit(inc, IncidentEventKind.resolved, unit=unit_id, order_id=inc.order, detail=disposition or "cleared")

    def _decline(self, inc: IncidentRec, u: UnitRec, reason: str) -> None:
        new_i = incident_next(inc.state, IncidentTrigger.decline)
        self._release(u.id, inc.order, UnitTrigger.decline)  # type: ignore[arg-type]
        inc = self._close_attempt(inc, AttemptOutcome.declined, reason)
        inc = inc.model_copy(update={"state": new_i, "unit": None, "order": None, "deadline": None})
        inc = self._emit(inc, IncidentEventKind.declined, unit=u.id, detail=reason)
        self._dispatch(inc)
        self._serve_waiting(u.id)

    def on_tick(self) -> None:
        s = self.s
        while s.deadlines and s.deadlines[0][0] <= self.now:
            _, iid, order_id = heapq.heappop(s.deadlines)
            inc = s.incidents.get(iid)
            if inc is None or inc.order != order_id or inc.state is not IncidentState.assigned:
                continue  # acknowledged, declined or closed since: the deadline no longer applies
            self._timeout(inc)
        cutoff = self.now - SEEN_TTL
        while s.seen and next(iter(s.seen.values())) < cutoff:
            s.seen.popitem(last=False)
        if sweep_due(s, self.now):
            s.last_sweep = self.now
            self._sweep_orphans()

    def _sweep_orphans(self) -> None:
        """Free units holding an order no open incident knows of.

        Only a write cut in half leaves one behind (the unit claim stored, the
        incident write refused, the undo lost with the connection). The grace
        period covers another replica's commit in flight; what this replica's
        memory says is not enough (its bucket watch may lag behind the other
        replica's incident writes), so the shell reads the candidates from the
        buckets again before a sweep (`EngineShell._confirm_orphans`)."""
        for u in orphans(self.s, self.now):
            self._put_unit(u.model_copy(update={"state": _let_go(u.state), "incident": None, "order": None}))
            self.s.counters["orphans_freed"] += 1
            self._serve_waiting(u.id)

    def _timeout(self, inc: IncidentRec) -> None:
        unit_id, order_id = inc.unit, inc.order
        assert unit_id is not None and order_id is not None
        secs = self.s.policy.ack_timeout(inc.priority)
        reason = f"not acknowledged within {secs:.0f} s"
        self._cancel_order(inc, unit_id, order_id, reason + "; the order goes to the next unit")
        self._release(unit_id, order_id, UnitTrigger.timeout)
        inc = self._close_attempt(inc, AttemptOutcome.timed_out, reason)
        inc = inc.model_copy(
            update={"state": incident_next(inc.state, IncidentTrigger.timeout), "unit": None, "order": None, "deadline": None}
        )
        inc = self._emit(inc, IncidentEventKind.timed_out, unit=unit_id, order_id=order_id, detail=reason)
        self.s.counters["timeouts"] += 1
        self._dispatch(inc)
        self._serve_waiting(unit_id)

    def _serve_waiting(self, unit_id: str) -> None:
        """A unit became free: give it to the most urgent waiting incident it fits."""
        s = self.s
        if not s.waiting:
            return
        for iid in sorted(s.waiting, key=lambda i: (s.incidents[i].priority, s.incidents[i].opened_at)):
            u = s.units[unit_id]
            if u.state is not UnitState.available:
                return
            inc = s.incidents.get(iid)
            if inc is None or inc.unit is not None:
                continue
            if self._why_not(inc)(u) is None:
                self._dispatch(inc)

    # -- unit reports
    def on_position(self, p: UnitPosition) -> None:
        s = self.s
        u = s.units.get(p.unit)
        if u is None:
            raise _Refuse(f"unknown unit {p.unit!r}: not in district {s.district.name!r}")
        if not s.district.contains(p.lat, p.lon):
            raise _Refuse(f"position ({p.lat:.6f}, {p.lon:.6f}) of unit {p.unit} is outside district {s.district.name!r}")
        stale = timedelta(seconds=s.policy.stale_position_s)
        was_usable = u.fix_time is not None and self.now - u.fix_time <= stale
        upd: dict[str, Any] = {"lat": p.lat, "lon": p.lon, "fix_time": min(p.time, self.now)}
        if u.state in (UnitState.available, UnitState.busy, UnitState.off_duty):
            upd["exercise"] = p.exercise  # joining or leaving a drill only between jobs
        self._put_unit(u.model_copy(update=upd), touch=False)
        if not was_usable and u.state is UnitState.available:
            self._serve_waiting(u.id)

    def on_status(self, st: UnitStatus) -> None:
        s = self.s
        u = s.units.get(st.unit)
        if u is None:
            raise _Refuse(f"unknown unit {st.unit!r}: not in district {s.district.name!r}")
        trigger = {
            UnitAvailability.available: UnitTrigger.report_available,
            UnitAvailability.busy: UnitTrigger.report_busy,
            UnitAvailability.off_duty: UnitTrigger.report_off_duty,
        }[st.status]
        inc = s.incidents.get(u.incident) if u.incident else None
        if u.order is not None and (inc is None or inc.unit != u.id or inc.order != u.order):
            # The unit holds an order its incident does not hold, or an incident not known here. On a copy
            # lagging behind another replica the shell reads both again and asks once more; still so, the
            # other replica may be between its unit claim and its incident write, or a write was cut short
            # (the orphan sweep frees the unit). Deciding would store the unit busy with an order its
            # incident still waits for: refused, and the unit is told why.
            where = "is not stored" if inc is None else f"no longer holds it ({inc.state.value})"
            raise _Refuse(
                f"status {st.status.value} from {u.id}: records out of step: it holds order {u.order} of "
                f"incident {u.incident}, which {where}; report again once the order is cleared or withdrawn"
            )
        try:
            new_state = unit_next(u.state, trigger)
        except TransitionRefused as e:
            raise _Refuse(f"status {st.status.value} from {u.id}: {e} (clear incident {u.incident} first)") from None
        upd: dict[str, Any] = {"state": new_state}
        if inc is not None and u.order is not None:
            reason = f"unit {u.id} reported {st.status.value}"
            self._cancel_order(inc, u.id, u.order, reason)
            upd.update(incident=None, order=None)
            inc = self._close_attempt(inc, AttemptOutcome.withdrawn, reason)
            inc = inc.model_copy(
                update={"state": incident_next(inc.state, IncidentTrigger.unit_lost), "unit": None, "order": None, "deadline": None}
            )
            inc = self._emit(inc, IncidentEventKind.requeued, unit=u.id, detail=reason)
        if u.state in (UnitState.available, UnitState.busy, UnitState.off_duty):
            upd["exercise"] = st.exercise
        self._put_unit(u.model_copy(update=upd))
        if inc is not None:
            self._dispatch(self._inc(inc.id))
        if new_state is UnitState.available:
            self._serve_waiting(u.id)

    # -- operator actions
    def on_close(self, c: CloseIncident) -> None:
        inc = self.s.incidents.get(c.incident_id)
        if inc is None:
            raise _Refuse(f"incident {c.incident_id} is not open")
        trigger = IncidentTrigger.cancel if c.cancel else IncidentTrigger.close
        new_state = incident_next(inc.state, trigger)
        if inc.unit and inc.order:
            self._cancel_order(inc, inc.unit, inc.order, f"incident closed by {c.by}")
            self._release(inc.unit, inc.order, UnitTrigger.withdrawn)
            inc = self._close_attempt(inc, AttemptOutcome.withdrawn, f"closed by {c.by}")
        unit_id = inc.unit
        inc = inc.model_copy(
            update={"state": new_state, "deadline": None, "closed_at": self.now, "disposition": c.disposition}
        )
        ev = IncidentEventKind.cancelled if c.cancel else IncidentEventKind.resolved
        self._emit(inc, ev, unit=unit_id, detail=f"{c.disposition or 'closed'} (by {c.by})")
        if unit_id:
            self._serve_waiting(unit_id)

    def on_reassign(self, c: Reassign) -> None:
        inc = self.s.incidents.get(c.incident_id)
        if inc is None:
            raise _Refuse(f"incident {c.incident_id} is not open")
        if inc.unit is None or inc.order is None:
            raise _Refuse(f"incident {c.incident_id} has no unit to take it from ({inc.state.value})")
        why = f"reassigned by {c.by}" + (f": {c.reason}" if c.reason else "")
        try:
            new_state = incident_next(inc.state, IncidentTrigger.unit_lost)
        except TransitionRefused as e:
            raise _Refuse(str(e)) from None
        unit_id = inc.unit
        self._cancel_order(inc, unit_id, inc.order, why)
        self._release(unit_id, inc.order, UnitTrigger.withdrawn)
        inc = self._close_attempt(inc, AttemptOutcome.reassigned, why)
        inc = inc.model_copy(update={"state": new_state, "unit": None, "order": None, "deadline": None})
        inc = self._emit(inc, IncidentEventKind.requeued, unit=unit_id, detail=why)
        self._dispatch(inc)
        self._serve_waiting(unit_id)

    def on_escalate(self, c: Escalate) -> None:
        inc = self.s.incidents.get(c.incident_id)
        if inc is None:
            raise _Refuse(f"incident {c.incident_id} is not open")
        self._escalate(inc, f"escalated by {c.by}" + (f": {c.reason}" if c.reason else ""))

    # -- records from the buckets
    def on_loaded(self, rec: UnitRec | IncidentRec) -> None:
        s = self.s
        if isinstance(rec, UnitRec):
            cur = s.units.get(rec.id)
            if cur is None or rec.rev > cur.rev:
                s.put_unit(rec)
            return
        cur_inc = s.incidents.get(rec.id)
        if cur_inc is None or rec.rev > cur_inc.rev:
            if cur_inc is None:
                for aid in rec.alert_ids:
                    s.seen.setdefault(aid, rec.updated_at)
            s.put_incident(rec)


def _let_go(state: UnitState) -> UnitState:
    """The state a unit is left in when an order is taken from it outside its lifecycle (records out of
    step): the withdrawn order's, or, for a unit that reported busy or off duty meanwhile, that state."""
    try:
        return unit_next(state, UnitTrigger.withdrawn)
    except TransitionRefused:
        return state


def _source_text(a: Alert) -> str:
    if a.source.value == "camera":
        zones = f" in zone {', '.join(a.zones)}" if a.zones else ""
        score = f" (score {a.score:.2f})" if a.score is not None else ""
        return f"camera {a.camera}: {a.label or a.kind.value}{zones}{score}"
    return f"flagged by {a.operator or a.console or 'operator'}" + (f": {a.note}" if a.note else "")
