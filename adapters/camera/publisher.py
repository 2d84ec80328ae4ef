"""Alerts out: AlertEvent -> contract Alert, and an outbox that loses nothing while NATS is away.

    outbox = Outbox(state_dir / "outbox.jsonl")        # replays what a previous run left unsent
    pub = Publisher(outbox, Subjects(prefix))
    pub.attach(nc)                                     # on every (re)connect
    outbox.add(entry_for(alert, snapshot=("cam01/ev1.jpg", jpeg)))
    pub.wake()
    asyncio.create_task(pub.run())

Every alert goes into the outbox first: an in-memory deque mirrored to an
append-only spool file (JSON lines, fsync'd on add), so a restart of the
adapter keeps what was not yet acknowledged. One sender task takes the oldest
entry, stores its snapshot in the JetStream object store, publishes the alert
through JetStream with `Nats-Msg-Id` = the alert's id and waits for the
acknowledgement; only then is the entry removed. Any failure (server away,
timeout, no stream) leaves it at the head and retries with backoff (0.2 s
doubling to 5 s). Entries go strictly in order, so an event's new, updates and
end arrive in that order. A publish whose acknowledgement was lost is sent
again and the server drops the copy by its id (the ALERTS stream's duplicate
window, 2 minutes by default): each alert is stored exactly once. A snapshot
the server keeps refusing while connected (bucket full) is given up after 5
tries so that its alert, and every alert behind it, still goes out.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adapters.camera.types import AlertEvent
from dispatch.events import (
    Alert,
    AlertPhase,
    AlertSource,
    Area,
    CapCategory,
    CapSeverity,
    CapStatus,
    CapUrgency,
    Detection,
    IncidentKind,
    encode,
)
from dispatch.subjects import Subjects

__all__ = ["Outbox", "OutboxEntry", "Publisher", "snapshot_name", "to_alert"]

_SEVERITY = {1: CapSeverity.Severe, 2: CapSeverity.Moderate, 3: CapSeverity.Minor}
_URGENCY = {1: CapUrgency.Immediate, 2: CapUrgency.Immediate, 3: CapUrgency.Expected}


# --------------------------------------------------------------------------- conversion


def snapshot_name(camera_id: str, event_id: str) -> str:
    """Object-store name of an event's best snapshot; a better one later replaces it."""
    return f"{camera_id}/{event_id}.jpg"


def _utc(t: float | None) -> datetime | None:
    if t is None:
        return None
    return datetime.fromtimestamp(float(t), timezone.utc)


def _box(b: Any) -> tuple[int, int, int, int] | None:
    if b is None:
        return None
    try:
        x1, y1, x2, y2 = (int(round(float(v))) for v in b)
    except (TypeError, ValueError):
        return None
    return (x1, y1, x2, y2)


def _score(s: Any) -> float | None:
    if s is None:
        return None
    try:
        return min(1.0, max(0.0, float(s)))
    except (TypeError, ValueError):
        return None


def to_alert(
    ev: AlertEvent,
    camera: Any,
    *,
    policy: Any = None,
    snapshot: str | None = None,
    exercise: str | None = None,
    time_: datetime | None = None,
) -> Alert:
    """The contract Alert for one phase of a detection event seen by `camera` (a district Camera).

    Frame times are epoch seconds (live streams stamp frames with the wall
    clock) and become UTC datetimes. An unknown kind becomes `other` rather than
    losing the alert; scores are clamped to 0..1.
    """
    try:
        kind = IncidentKind(ev.kind)
    except ValueError:
        kind = IncidentKind.other
    priority = min(3, max(1, int(ev.priority)))
    category = CapCategory.Security
    if policy is not None:
        try:
            category = policy.rule(kind).category
        except Exception:
            pass
    dets = []
    for d in ev.boxes or ():
        box = _box(getattr(d, "box", None))
        sc = _score(getattr(d, "score", None))
        if box is None or sc is None:
            continue
        dets.append(Detection(label=str(getattr(d, "label", "object"))[:40], score=sc, box=box,
                              track_id=getattr(d, "track_id", None)))
    pos = getattr(camera, "position", None)
    area = None
    if pos is not None:
        area = Area(lat=pos.lat, lon=pos.lon, description=str(getattr(camera, "name", ""))[:200])
    fs = None
    if ev.frame_size is not None:
        try:
            fs = (int(ev.frame_size[0]), int(ev.frame_size[1]))
        except (TypeError, ValueError, IndexError):
            fs = None
    extra: dict[str, Any] = {}
    if time_ is not None:
        extra["time"] = time_
    return Alert(
        event_id=str(ev.event_id),
        phase=AlertPhase(ev.phase),
        source=AlertSource.camera,
        kind=kind,
        category=category,
        urgency=_URGENCY[priority],
        severity=_SEVERITY[priority],
        priority=priority,
        area=area,
        camera=str(camera.id),
        zones=tuple(str(z) for z in (ev.zones or ())),
        label=None if ev.label is None else str(ev.label)[:40],
        score=_score(ev.score),
        box=_box(ev.box),
        detections=tuple(dets),
        frame_size=fs,
        snapshot=snapshot,
        start_time=_utc(ev.start_t),
        end_time=_utc(ev.end_t) if ev.phase == "end" else None,
        exercise=exercise,
        status=CapStatus.Exercise if exercise else CapStatus.Actual,
        **extra,
    )


# --------------------------------------------------------------------------- outbox


@dataclass
class OutboxEntry:
    id: str  # the alert's message id: the JetStream de-duplication id
    subject: str
    data: bytes  # the encoded Alert
    snapshot_name: str | None = None
    snapshot: bytes | None = None
    created: float = field(default_factory=time.time)
    attempts: int = 0
    snapshot_stored: bool = False  # in memory only: a retry after a failed publish skips the put
    snapshot_failures: int = 0  # puts refused while connected

    @classmethod
    def for_alert(cls, alert: Alert, subject: str, snapshot: tuple[str, bytes] | None = None) -> "OutboxEntry":
        name, jpeg = snapshot if snapshot else (None, None)
        return cls(id=alert.id, subject=subject, data=encode(alert), snapshot_name=name, snapshot=jpeg)

    def to_line(self) -> str:
        d: dict[str, Any] = {"op": "add", "id": self.id, "subject": self.subject,
                             "data": base64.b64encode(self.data).decode(), "created": self.created}
        if self.snapshot_name and self.snapshot is not None:
            d["snap_name"] = self.snapshot_name
            d["snap"] = base64.b64encode(self.snapshot).decode()
        return json.dumps(d, separators=(",", ":")) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OutboxEntry":
        return cls(
            id=d["id"], subject=d["subject"], data=base64.b64decode(d["data"]),
            snapshot_name=d.get("snap_name"), snapshot=base64.b64decode(d["snap"]) if d.get("snap") else None,
            created=float(d.get("created", time.time())),
        )

    @property
    def size(self) -> int:
        return len(self.data) + (len(self.snapshot) if self.snapshot else 0)


class Outbox:
    """Alerts not yet acknowledged by JetStream, oldest first, mirrored to a spool file.

    The spool is append-only JSON lines (`add` with the payload, `ack` with the
    id), fsync'd on every add; it is truncated whenever the outbox empties and
    rewritten when it grows past `compact_bytes`. A torn last line (a crash
    mid-write) is skipped on load. `path=None` keeps the outbox in memory only.
    When the snapshots held exceed `max_snapshot_bytes` (a very long outage) the
    oldest snapshots are shed; alerts themselves are never dropped.
    """

    def __init__(self, path: str | Path | None, *, compact_bytes: int = 16 << 20, max_snapshot_bytes: int = 256 << 20) -> None:
        self.path = Path(path) if path is not None else None
        self.compact_bytes = compact_bytes
        self.max_snapshot_bytes = max_snapshot_bytes
        self._q: collections.deque[OutboxEntry] = collections.deque()
        self._f: Any = None
        self.recovered = 0
        self.shed_snapshots = 0
        self._snap_bytes = 0
        self.added = 0
        self.acked = 0
        self.peak = 0  # most entries waiting at once
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._load()
            self._f = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        assert self.path is not None
        if not self.path.exists():
            return
        pending: dict[str, OutboxEntry] = {}
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    d = json.loads(line)
                    if d.get("op") == "add":
                        e = OutboxEntry.from_dict(d)
                        pending.setdefault(e.id, e)
                    elif d.get("op") == "ack":
                        pending.pop(d["id"], None)
                except (ValueError, KeyError, TypeError):
                    continue  # a torn line from a crash mid-write
        self._q.extend(pending.values())
        self._snap_bytes = sum(len(e.snapshot or b"") for e in self._q)
        self.recovered = len(self._q)
        self._rewrite()

    def _rewrite(self) -> None:
        """Write the pending entries alone to a fresh spool (atomic rename)."""
        assert self.path is not None
        if self._f is not None:
            self._f.close()
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for e in self._q:
                f.write(e.to_line())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if self._f is not None:
            self._f = open(self.path, "a", encoding="utf-8")

    def __len__(self) -> int:
        return len(self._q)

    def __iter__(self):
        return iter(list(self._q))

    def head(self) -> OutboxEntry | None:
        return self._q[0] if self._q else None

    @property
    def oldest_age_s(self) -> float:
        return time.time() - self._q[0].created if self._q else 0.0

    def add(self, entry: OutboxEntry) -> None:
        self._q.append(entry)
        self.added += 1
        self.peak = max(self.peak, len(self._q))
        self._snap_bytes += len(entry.snapshot or b"")
        if self._f is not None:
            self._f.write(entry.to_line())
            self._f.flush()
            os.fsync(self._f.fileno())
        if self._snap_bytes > self.max_snapshot_bytes:
            self._shed()

    def _shed(self) -> None:
        for e in self._q:
            if self._snap_bytes <= self.max_snapshot_bytes * 0.9:
                break
            if e.snapshot is not None and not e.snapshot_stored:
                self._snap_bytes -= len(e.snapshot)
                e.snapshot = None
                self.shed_snapshots += 1
        if self._f is not None:
            self._rewrite()

    def ack(self, entry_id: str) -> None:
        """The head (with this id) is stored on the server: forget it."""
        if not self._q or self._q[0].id != entry_id:
            kept = [e for e in self._q if e.id != entry_id]
            if len(kept) == len(self._q):
                return
            self._q = collections.deque(kept)
        else:
            e = self._q.popleft()
            self._snap_bytes -= len(e.snapshot or b"")
        self.acked += 1
        if self._f is None:
            return
        if not self._q:
            self._f.close()
            self._f = open(self.path, "w", encoding="utf-8")  # empty: start a fresh spool
            return
        self._f.write(json.dumps({"op": "ack", "id": entry_id}) + "\n")
        self._f.flush()
        if self._f.tell() > self.compact_bytes:
            self._rewrite()

    def close(self) -> None:
        if self._f is not None:
            self._f.flush()
            self._f.close()
            self._f = None


# --------------------------------------------------------------------------- sender


class Publisher:
    """Sends the outbox, oldest first, through JetStream; retries with backoff until acknowledged."""

    def __init__(
        self,
        outbox: Outbox,
        subjects: Subjects,
        *,
        replicas: int = 1,
        publish_timeout_s: float = 2.0,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
        on_sent: Callable[[OutboxEntry, Any], None] | None = None,
        log: Any = None,
        snapshot_give_up: int = 5,
    ) -> None:
        self.outbox = outbox
        self.s = subjects
        self.replicas = replicas
        self.publish_timeout_s = publish_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.on_sent = on_sent
        self.log = log
        self.snapshot_give_up = snapshot_give_up
        self.nc: Any = None
        self.js: Any = None
        self._obs: Any = None
        self._stream_ok = False
        self._wake = asyncio.Event()
        self.sent = 0
        self.duplicates = 0
        self.failures = 0
        self.last_error = ""
        self.latencies_ms: collections.deque[float] = collections.deque(maxlen=1000)

    def attach(self, nc: Any) -> None:
        """Use this connection (call again after a reconnect is not needed: nats-py reconnects itself)."""
        self.nc = nc
        self.js = nc.jetstream() if nc is not None else None
        self._obs = None
        self._stream_ok = False
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def _ensure_stream(self) -> None:
        if self._stream_ok:
            return
        from nats.js.errors import NotFoundError

        from dispatch.store import ensure_streams

        try:
            await self.js.stream_info(self.s.stream_alerts)
        except NotFoundError:
            # the engine normally creates the streams; make them so alerts are kept even before it runs
            await ensure_streams(self.js, self.s, replicas=self.replicas)
        self._stream_ok = True

    async def _objstore(self) -> Any:
        if self._obs is not None:
            return self._obs
        from nats.js.api import ObjectStoreConfig, StorageType
        from nats.js.errors import BucketNotFoundError, NotFoundError

        bucket = self.s.bucket_snapshots
        try:
            self._obs = await self.js.object_store(bucket)
        except (BucketNotFoundError, NotFoundError):
            try:
                self._obs = await self.js.create_object_store(
                    bucket,
                    config=ObjectStoreConfig(
                        bucket=bucket, storage=StorageType.FILE, replicas=self.replicas,
                        description="PatrolLink camera snapshots (best JPEG per detection event)",
                    ),
                )
            except Exception:
                self._obs = await self.js.object_store(bucket)  # created meanwhile by another adapter
        return self._obs

    async def send_one(self, e: OutboxEntry) -> Any:
        """Store e's snapshot and publish e; return the PubAck. Raises on any failure."""
        await self._ensure_stream()
        if e.snapshot is not None and e.snapshot_name and not e.snapshot_stored:
            try:
                obs = await self._objstore()
                await asyncio.wait_for(obs.put(e.snapshot_name, e.snapshot), self.publish_timeout_s * 3)
                e.snapshot_stored = True
            except Exception as exc:
                # the server is there and keeps refusing the snapshot (bucket full ...): the alert
                # matters more than its picture, so it goes without after a few tries
                if self.nc is not None and self.nc.is_connected:
                    e.snapshot_failures += 1
                if e.snapshot_failures < self.snapshot_give_up:
                    raise
                if self.log is not None:
                    self.log.error("camera.snapshot.dropped", alert_id=e.id, name=e.snapshot_name,
                                   error=f"{type(exc).__name__}: {exc}")
                e.snapshot = None
        return await self.js.publish(
            e.subject, e.data, timeout=self.publish_timeout_s, headers={"Nats-Msg-Id": e.id}
        )

    async def run(self) -> None:
        """Forever: send the head of the outbox; on failure wait (backoff) and try it again."""
        from nats.js.errors import NoStreamResponseError

        backoff = self.backoff_initial_s
        while True:
            e = self.outbox.head()
            if e is None or self.js is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            e.attempts += 1
            try:
                ack = await self.send_one(e)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}".strip(": ")
                if isinstance(exc, NoStreamResponseError):
                    self._stream_ok = False  # the stream went away (or never existed): make it again
                if "object" in self.last_error.lower() or "bucket" in self.last_error.lower():
                    self._obs = None
                if self.log is not None and (e.attempts == 1 or e.attempts % 20 == 0):
                    self.log.warning(
                        "camera.alert.retry", alert_id=e.id, attempts=e.attempts, backlog=len(self.outbox),
                        error=self.last_error, retry_in_s=round(backoff, 2),
                    )
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), backoff)
                except asyncio.TimeoutError:
                    pass
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            backoff = self.backoff_initial_s
            self.sent += 1
            if getattr(ack, "duplicate", False):
                self.duplicates += 1
            self.latencies_ms.append((time.time() - e.created) * 1000.0)
            self.outbox.ack(e.id)
            if self.on_sent is not None:
                try:
                    self.on_sent(e, ack)
                except Exception:
                    pass

    async def drain(self, timeout_s: float) -> bool:
        """Wait up to timeout_s for the outbox to empty (the run task does the sending)."""
        deadline = time.monotonic() + timeout_s
        while len(self.outbox) and time.monotonic() < deadline:
            self.wake()
            await asyncio.sleep(0.05)
        return not len(self.outbox)

