"""The engine's durable state: one record per unit and per incident.

These are what the key-value buckets hold (JSON), written with revision checks.
`rev` is the bucket revision the record was read at (0 = never stored); it is
not part of the stored JSON.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field

from dispatch.events import Area, CapCategory, CapCertainty, IncidentKind, TravelMode, UnitKind


_setattr = object.__setattr__


def _copy(m: Any, update: Mapping[str, Any] | None) -> Any:
    """What `BaseModel.model_copy(update=...)` does for these records (extra="forbid", no private
    attributes), in a third of the time: the engine copies a record for every change of it."""
    cls = type(m)
    c = cls.__new__(cls)
    d = m.__dict__.copy()
    fields_set = m.__pydantic_fields_set__
    if update:
        d.update(update)
        fields_set = fields_set | update.keys()
    else:
        fields_set = set(fields_set)
    _setattr(c, "__dict__", d)
    _setattr(c, "__pydantic_extra__", None)
    _setattr(c, "__pydantic_fields_set__", fields_set)
    _setattr(c, "__pydantic_private__", None)
    return c


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        return super().model_copy(update=update, deep=True) if deep else _copy(self, update)

    rev: int = Field(0, exclude=True, description="bucket revision this copy was read at; 0 = not stored yet")

    def dump(self) -> bytes:
        return self.model_dump_json().encode()


class UnitState(StrEnum):
    available = "available"
    assigned = "assigned"  # order sent, waiting for the acknowledgement
    acknowledged = "acknowledged"
    en_route = "en_route"
    on_scene = "on_scene"
    busy = "busy"
    off_duty = "off_duty"


class IncidentState(StrEnum):
    new = "new"
    queued = "queued"  # open, waiting for a unit
    assigned = "assigned"
    acknowledged = "acknowledged"
    en_route = "en_route"
    on_scene = "on_scene"
    escalated = "escalated"  # open, nobody could take it; supervisors told
    resolved = "resolved"
    cancelled = "cancelled"


OPEN_INCIDENT_STATES = frozenset(
    {
        IncidentState.new,
        IncidentState.queued,
        IncidentState.assigned,
        IncidentState.acknowledged,
        IncidentState.en_route,
        IncidentState.on_scene,
        IncidentState.escalated,
    }
)
WAITING_INCIDENT_STATES = frozenset({IncidentState.new, IncidentState.queued, IncidentState.escalated})


class UnitRec(Record):
    id: str
    callsign: str = ""
    kind: UnitKind
    mode: TravelMode
    talkgroup: str
    state: UnitState = UnitState.available
    lat: float | None = None
    lon: float | None = None
    fix_time: datetime | None = Field(None, description="time of the last position report")
    incident: str | None = Field(None, description="incident the unit works on or was ordered to")
    order: str | None = Field(None, description="order id it holds")
    exercise: str | None = Field(None, description="drill the unit takes part in; null = real operations")
    updated: datetime | None = None


class AttemptOutcome(StrEnum):
    pending = "pending"
    acknowledged = "acknowledged"
    declined = "declined"
    timed_out = "timed_out"
    preempted = "preempted"
    withdrawn = "withdrawn"  # unit went off duty / busy, or incident cancelled
    reassigned = "reassigned"  # an operator took the incident away from this unit
    done = "done"


class Attempt(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        return super().model_copy(update=update, deep=True) if deep else _copy(self, update)

    unit: str
    order_id: str
    sent_at: datetime
    deadline: datetime
    eta_s: float | None = None
    outcome: AttemptOutcome = AttemptOutcome.pending
    reason: str = ""


class OutboxItem(BaseModel):
    """A message of the incident's latest decision, kept so a restart can re-send what a crash cut off."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["order", "broadcast", "event"]
    body: str


class IncidentRec(Record):
    id: str
    state: IncidentState = IncidentState.new
    kind: IncidentKind
    category: CapCategory = CapCategory.Security
    certainty: CapCertainty = CapCertainty.Likely
    priority: int
    place: Area
    camera: str | None = None
    zones: tuple[str, ...] = ()
    event_ids: tuple[str, ...] = Field((), description="detection event ids (camera or operator) joined into it")
    alert_ids: tuple[str, ...] = Field((), description="message ids of its alerts (latest few)")
    alert_count: int = 0
    snapshot: str | None = None
    exercise: str | None = None
    opened_at: datetime
    last_alert_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None
    unit: str | None = None
    order: str | None = None
    deadline: datetime | None = None
    attempts: tuple[Attempt, ...] = ()
    failures: int = 0
    escalated: bool = False
    seq: int = 0
    disposition: str = ""
    outbox: tuple[OutboxItem, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_INCIDENT_STATES

    @property
    def tried(self) -> frozenset[str]:
        """Units that declined or let the order time out: not asked again for this incident."""
        return frozenset(
            a.unit for a in self.attempts if a.outcome in (AttemptOutcome.declined, AttemptOutcome.timed_out, AttemptOutcome.reassigned)
        )
