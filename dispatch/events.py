"""The event contract: every payload that crosses NATS, as a versioned pydantic model.

Every side (engine, camera adapters, console, terminals, simulators) imports this
module and `dispatch.subjects`; nothing else crosses the line between them.

Words follow CAP 1.2 where CAP has one (category, urgency, severity, certainty,
status, area) and Frigate's event shape for camera data (camera, label, score,
box, zones, frame size, snapshot, start/end time).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEMA_VERSION = 1
"""The version every message of this contract carries; a message with another is refused."""


def new_id() -> str:
    """A random (version 4) UUID as 32 hex digits, as uuid.uuid4().hex gives, without building the
    UUID object (the engine makes half a dozen per order)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    return b.hex()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------- vocabularies


class UnitKind(StrEnum):
    police = "police"
    auxiliary = "auxiliary"
    volunteer = "volunteer"


class TravelMode(StrEnum):
    foot = "foot"
    bicycle = "bicycle"
    motorbike = "motorbike"
    car = "car"


class IncidentKind(StrEnum):
    """What happened; the district policy says which are violent and who may take them."""

    assault = "assault"
    robbery = "robbery"
    fight = "fight"
    weapon = "weapon"
    intrusion = "intrusion"
    theft = "theft"
    vandalism = "vandalism"
    loitering = "loitering"
    crowd = "crowd"
    suspicious = "suspicious"
    traffic = "traffic"
    medical = "medical"
    fire = "fire"
    camera_tamper = "camera_tamper"
    camera_offline = "camera_offline"
    other = "other"


class CapCategory(StrEnum):
    Geo = "Geo"
    Met = "Met"
    Safety = "Safety"
    Security = "Security"
    Rescue = "Rescue"
    Fire = "Fire"
    Health = "Health"
    Env = "Env"
    Transport = "Transport"
    Infra = "Infra"
    CBRNE = "CBRNE"
    Other = "Other"


class CapUrgency(StrEnum):
    Immediate = "Immediate"
    Expected = "Expected"
    Future = "Future"
    Past = "Past"
    Unknown = "Unknown"


class CapSeverity(StrEnum):
    Extreme = "Extreme"
    Severe = "Severe"
    Moderate = "Moderate"
    Minor = "Minor"
    Unknown = "Unknown"


class CapCertainty(StrEnum):
    Observed = "Observed"
    Likely = "Likely"
    Possible = "Possible"
    Unlikely = "Unlikely"
    Unknown = "Unknown"


class CapStatus(StrEnum):
    Actual = "Actual"
    Exercise = "Exercise"
    System = "System"
    Test = "Test"
    Draft = "Draft"


class AlertPhase(StrEnum):
    """Frigate's event lifecycle: one detection event is new, then updates, then end."""

    new = "new"
    update = "update"
    end = "end"


class AlertSource(StrEnum):
    camera = "camera"
    operator = "operator"


class CameraState(StrEnum):
    online = "online"
    offline = "offline"
    degraded = "degraded"


class UnitAvailability(StrEnum):
    """What a unit says about itself; the engine adds assigned/en route/on scene."""

    available = "available"
    busy = "busy"
    off_duty = "off_duty"


class ReplyKind(StrEnum):
    ack = "ack"
    decline = "decline"
    en_route = "en_route"
    on_scene = "on_scene"
    cleared = "cleared"


class OrderAction(StrEnum):
    assign = "assign"
    cancel = "cancel"


class BroadcastReason(StrEnum):
    escalation = "escalation"
    all_call = "all_call"


class IncidentEventKind(StrEnum):
    opened = "opened"
    merged = "merged"
    upgraded = "upgraded"
    assigned = "assigned"
    acknowledged = "acknowledged"
    declined = "declined"
    timed_out = "timed_out"
    escalated = "escalated"
    preempted = "preempted"
    requeued = "requeued"
    en_route = "en_route"
    on_scene = "on_scene"
    resolved = "resolved"
    cancelled = "cancelled"


# --------------------------------------------------------------------------- building blocks


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


Lat = Annotated[float, Field(ge=-90.0, le=90.0, description="WGS84 latitude, degrees")]
Lon = Annotated[float, Field(ge=-180.0, le=180.0, description="WGS84 longitude, degrees")]


class Point(Model):
    lat: Lat
    lon: Lon


class Area(Model):
    """CAP area: where it happens, as a circle with a description."""

    lat: Lat
    lon: Lon
    radius_m: float = Field(0.0, ge=0.0, description="CAP circle radius in metres; 0 = a point")
    description: str = Field("", max_length=200, description="CAP areaDesc: place name a person reads")


class Message(Model):
    """Fields every message carries."""

    schema_version: int = Field(SCHEMA_VERSION, description="contract version; receivers refuse others")
    id: str = Field(default_factory=new_id, min_length=1, max_length=64, description="unique message id, also the JetStream de-duplication id")
    time: datetime = Field(default_factory=utcnow, description="when the sender produced the message, UTC")
    exercise: str | None = Field(
        None, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$",
        description="null for real operations, the drill id during a drill (letters, digits, '_' or '-')",
    )

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"schema version {v} is not supported (this build speaks {SCHEMA_VERSION})")
        return v

    @field_validator("time")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        if v.tzinfo is timezone.utc:
            return v  # what astimezone(timezone.utc) returns for it (the engine's clock is UTC already)
        if v.tzinfo is None or v.utcoffset() is None:
            raise ValueError("time must carry a timezone (UTC)")
        return v.astimezone(timezone.utc)


# --------------------------------------------------------------------------- payloads


class Detection(Model):
    """One object in a camera frame (Frigate shape); box in pixels of the detect frame."""

    label: str = Field(..., max_length=40, description="object class: person, car, ...")
    score: float = Field(..., ge=0.0, le=1.0, description="detector confidence")
    box: tuple[int, int, int, int] = Field(..., description="x1, y1, x2, y2 in detect-frame pixels")
    track_id: int | None = Field(None, description="tracker identity, stable across frames")


class Alert(Message):
    """A new / update / end of one detection event, from a camera adapter or an operator."""

    event_id: str = Field(..., min_length=1, max_length=64, description="stable id of the detection event across new/update/end")
    phase: AlertPhase = Field(AlertPhase.new, description="Frigate lifecycle phase of the event")
    source: AlertSource = Field(..., description="camera adapter or person at a console")
    kind: IncidentKind = Field(..., description="what is happening (CAP 'event')")
    category: CapCategory = Field(CapCategory.Security, description="CAP category")
    urgency: CapUrgency = Field(CapUrgency.Immediate, description="CAP urgency")
    severity: CapSeverity = Field(CapSeverity.Moderate, description="CAP severity")
    certainty: CapCertainty = Field(CapCertainty.Likely, description="CAP certainty; Observed when a person saw it")
    status: CapStatus = Field(CapStatus.Actual, description="CAP status; Exercise for drill traffic")
    priority: int = Field(2, ge=1, le=3, description="1 = life at risk now, 3 = check when free")
    area: Area | None = Field(None, description="where; engines place camera alerts at the camera when absent")
    camera: str | None = Field(None, max_length=64, description="camera id (Frigate 'camera')")
    zones: tuple[str, ...] = Field((), description="camera zones the object entered")
    label: str | None = Field(None, max_length=40, description="object class that triggered it")
    score: float | None = Field(None, ge=0.0, le=1.0, description="top detector score of the event")
    box: tuple[int, int, int, int] | None = Field(None, description="best box, detect-frame pixels")
    detections: tuple[Detection, ...] = Field((), description="objects in the best frame")
    frame_size: tuple[int, int] | None = Field(None, description="detect frame width, height")
    snapshot: str | None = Field(None, max_length=200, description="object-store name of the best JPEG")
    start_time: datetime | None = Field(None, description="when the event started in the video")
    end_time: datetime | None = Field(None, description="when it ended (phase end)")
    console: str | None = Field(None, max_length=64, description="console id for operator alerts")
    operator: str | None = Field(None, max_length=64, description="who flagged or confirmed it")
    confirms: str | None = Field(None, max_length=64, description="event_id of a camera alert this operator alert confirms")
    note: str = Field("", max_length=500, description="free text from the operator")

    @model_validator(mode="after")
    def _consistent(self) -> "Alert":
        if self.source is AlertSource.camera and not self.camera:
            raise ValueError("a camera alert needs its camera id")
        if self.source is AlertSource.operator and self.area is None and not self.camera:
            raise ValueError("an operator alert needs an area (lat/lon) or a camera id")
        if (self.exercise is not None) != (self.status is CapStatus.Exercise):
            raise ValueError("status must be Exercise exactly when exercise (the drill id) is set")
        return self


class CameraHealth(Message):
    camera: str = Field(..., max_length=64, description="camera id")
    state: CameraState = Field(..., description="online / offline / degraded")
    fps: float = Field(0.0, ge=0.0, description="measured frames per second")
    detail: str = Field("", max_length=300, description="why, for a person")


class UnitPosition(Message):
    unit: str = Field(..., max_length=64, description="unit id")
    lat: Lat
    lon: Lon
    accuracy_m: float = Field(10.0, ge=0.0, description="radius of uncertainty, metres")
    speed_mps: float | None = Field(None, ge=0.0, description="ground speed")
    heading_deg: float | None = Field(None, ge=0.0, lt=360.0, description="course over ground")


class UnitStatus(Message):
    unit: str = Field(..., max_length=64, description="unit id")
    status: UnitAvailability = Field(..., description="available / busy / off duty")


class Candidate(Model):
    unit: str = Field(..., description="unit id")
    eta_s: float = Field(..., ge=0.0, description="estimated travel time to the scene")
    distance_m: float = Field(..., ge=0.0, description="straight-line distance")
    method: Literal["road", "straight"] = Field(..., description="road = over the street graph")


class Skipped(Model):
    unit: str = Field(..., description="unit id")
    reason: str = Field(..., description="why this unit was not chosen")


class Explanation(Model):
    """Why the engine chose this unit: the candidates it weighed and why the others lost."""

    chosen: str | None = Field(None, description="unit id, or null when nobody could take it")
    candidates: tuple[Candidate, ...] = Field((), description="units weighed, fastest first")
    skipped: tuple[Skipped, ...] = Field((), description="units ruled out, with the reason")
    note: str = Field("", description="summary for a person")


class DispatchOrder(Message):
    """An order to one unit (assign), or its withdrawal (cancel)."""

    order_id: str = Field(..., max_length=64, description="order id; replies quote it")
    action: OrderAction = Field(OrderAction.assign, description="assign, or cancel a previous order")
    incident_id: str = Field(..., max_length=64, description="the incident this order is for")
    unit: str = Field(..., max_length=64, description="the unit ordered")
    attempt: int = Field(1, ge=1, description="1 for the first unit asked, 2 for the next ...")
    priority: int = Field(2, ge=1, le=3, description="1 = life at risk now, 3 = check when free")
    kind: IncidentKind = Field(..., description="what is happening")
    category: CapCategory = Field(CapCategory.Security, description="CAP category")
    place: Area = Field(..., description="where to go")
    snapshot: str | None = Field(None, description="object-store name of the best JPEG")
    route: tuple[tuple[float, float], ...] = Field((), description="(lat, lon) points from the unit to the scene")
    eta_s: float | None = Field(None, ge=0.0, description="estimated travel time")
    ack_deadline: datetime | None = Field(None, description="acknowledge before this or the order goes to the next unit")
    explanation: Explanation | None = Field(None, description="why this unit: candidates and why others lost")
    reason: str = Field("", description="for cancel: why the order was withdrawn")


class OrderReply(Message):
    order_id: str = Field(..., max_length=64, description="the order answered")
    incident_id: str = Field(..., max_length=64, description="the incident of that order")
    unit: str = Field(..., max_length=64, description="the unit answering")
    reply: ReplyKind = Field(..., description="ack, decline, en route, on scene or cleared")
    reason: str = Field("", max_length=300, description="decline reason, or disposition on cleared")


class Broadcast(Message):
    """To a whole talkgroup: escalation when nobody took an incident, or an all-call."""

    talkgroup: str = Field(..., max_length=64, description="who hears it")
    reason: BroadcastReason = Field(..., description="escalation or all-call")
    incident_id: str | None = Field(None, max_length=64, description="incident it is about, if any")
    priority: int = Field(1, ge=1, le=3, description="priority of that incident")
    kind: IncidentKind | None = Field(None, description="what is happening")
    place: Area | None = Field(None, description="where")
    text: str = Field("", max_length=500, description="what is read out")


class IncidentEvent(Message):
    """One decision about one incident; the stream of these is the incident's history."""

    incident_id: str = Field(..., max_length=64, description="the incident")
    seq: int = Field(..., ge=1, description="1, 2, 3 ... per incident")
    event: IncidentEventKind = Field(..., description="what was decided")
    state: str = Field(..., description="incident state after this event")
    kind: IncidentKind = Field(..., description="what is happening")
    priority: int = Field(..., ge=1, le=3, description="current priority")
    place: Area = Field(..., description="where")
    unit: str | None = Field(None, description="unit concerned")
    order_id: str | None = Field(None, description="order concerned")
    alert_ids: tuple[str, ...] = Field((), description="message ids of the alerts behind this event")
    camera: str | None = Field(None, description="camera that saw it, if any")
    eta_s: float | None = Field(None, description="estimated travel time of the assigned unit")
    explanation: Explanation | None = Field(None, description="for assigned: the choice explained")
    detail: str = Field("", description="for a person")


class Rejected(Message):
    """Input that somebody refused: kept with its reason so nothing is lost."""

    subject: str = Field(..., description="where the input arrived")
    reason: str = Field(..., description="why it was refused")
    raw: str = Field(..., description="the input bytes, base64")
    refused_by: str = Field("engine", description="the component that refused it")


class CameraControl(Message):
    """A runtime control for one camera, sent as a request on `cameras.<id>.control`.

    Fields left out stay as they are; an empty request `{}` just asks for the state.
    """

    camera: str | None = Field(None, max_length=64, description="camera id; the subject names it too")
    enabled: bool | None = Field(None, description="detection on (true) or off (false); capture and health go on either way")
    sensitivity: float | None = Field(None, ge=0.0, le=1.0, description="motion sensitivity, 0 = only large movements, 1 = the smallest")


class CameraControlState(Message):
    """The reply to a CameraControl: the camera's state after it."""

    camera: str = Field(..., max_length=64, description="camera id")
    enabled: bool = Field(..., description="detection on")
    sensitivity: float = Field(..., ge=0.0, le=1.0, description="motion sensitivity now")
    state: CameraState = Field(..., description="online / offline / degraded")
    fps: float = Field(0.0, ge=0.0, description="measured frames per second")
    applied: bool = Field(..., description="the camera's worker applied it; false: stored, applied when the worker is back")
    error: str = Field("", max_length=300, description="why the request was refused or failed")


class CameraFeedback(Message):
    """An operator's verdict on one camera detection event."""

    event_id: str = Field(..., min_length=1, max_length=64, description="the camera event judged")
    verdict: Literal["confirmed", "dismissed"] = Field(..., description="confirmed = real; dismissed = false alarm")
    reason: str = Field("", max_length=300, description="why, for a person (e.g. 'tree shadow')")
    camera: str | None = Field(None, max_length=64, description="camera id; the subject names it too")
    operator: str | None = Field(None, max_length=64, description="who judged it")


class IncidentAction(Message):
    """An operator's or supervisor's decision about one incident, on ops.incident.<id>.<action>
    (JetStream stream OPS, so every action is kept with who took it)."""

    incident_id: str = Field(..., max_length=64, description="the incident")
    action: Literal["close", "cancel", "reassign", "escalate"] = Field(
        ..., description="close (resolved with a disposition), cancel (false alarm / not needed), "
        "reassign (withdraw the order and choose again without that unit), escalate (tell supervisors now)"
    )
    operator: str = Field(..., min_length=1, max_length=64, description="who decided (console user name)")
    console: str = Field(..., min_length=1, max_length=64, description="console id")
    disposition: str = Field("", max_length=300, description="close / cancel: the outcome, for the record")
    reason: str = Field("", max_length=300, description="reassign / escalate: why")
    unit: str | None = Field(None, max_length=64, description="reassign: a unit the operator prefers (the engine still checks it; null: the engine chooses)")


class DrillInject(Message):
    """A trainer's request to add an incident to a running drill (`patrollink drill inject`), on
    drill.inject (whichever drill runs) or drill.<id>.inject (request/reply; answered by DrillInjectResult).

    Either `camera` (the incident is played in that synthetic camera's video, and the camera adapter has
    to see it) or `at` (an operator reports it at that place)."""

    kind: str = Field(..., min_length=1, max_length=32, description="camera: intrusion, loitering, fight, crowd, camera_covered; at: any incident kind")
    drill: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$", description="the drill meant; null: whichever drill answers")
    camera: str | None = Field(None, max_length=64, description="play it in this camera's video")
    at: Point | None = Field(None, description="an operator's report at this place")
    priority: Literal[1, 2, 3] | None = Field(None, description="`at` only: the priority (a camera incident takes its camera rule's); null: the policy's default")
    seconds: float | None = Field(None, gt=0.0, le=3600.0, description="`camera` only: how long it lasts (loitering, fight, crowd, camera_covered)")
    description: str = Field("", max_length=200, description="free text for the drill's record")

    @model_validator(mode="after")
    def _one_place(self) -> "DrillInject":
        if (self.camera is None) == (self.at is None):
            raise ValueError("give camera (in its video) or at (an operator's report), not both and not neither")
        return self


class DrillInjectResult(Message):
    """A running drill's answer to a DrillInject: what it scripted, or why it refused."""

    ok: bool = Field(..., description="true: scripted; false: refused, see error")
    drill: str = Field(..., max_length=64, description="the drill that answered")
    error: str = Field("", max_length=300, description="why it was refused (a camera not in the drill, a place outside the district, ...)")
    n: int | None = Field(None, ge=1, description="the incident's number in the drill")
    at_s: float | None = Field(None, ge=0.0, description="drill time of the incident, seconds since the drill began")
    camera: str | None = Field(None, max_length=64, description="the camera playing it, null for an operator's report")
    kind: str | None = Field(None, max_length=32, description="what is played")
    expected_kind: str | None = Field(None, max_length=32, description="the incident kind the engine should record")
    priority: int | None = Field(None, ge=1, le=3, description="the priority it should get")


PAYLOADS: dict[str, type[Message]] = {
    m.__name__: m
    for m in (
        Alert, CameraHealth, UnitPosition, UnitStatus, DispatchOrder, OrderReply, Broadcast, IncidentEvent, Rejected,
        CameraControl, CameraControlState, CameraFeedback, IncidentAction, DrillInject, DrillInjectResult,
    )
}


def describe_error(exc: ValidationError) -> str:
    """One line per problem, `field: reason`, for dead letters and CLI messages."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(message)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def encode(msg: Message) -> bytes:
    return msg.model_dump_json().encode()
