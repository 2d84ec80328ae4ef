"""Feedback: which camera alerts operators confirmed and which they dismissed, per camera and rule.

The adapter records every detection event it raises (on its `new` phase) and
every verdict it hears about it, in a small SQLite file under its state dir:

* an explicit message on `cameras.<id>.feedback`
  (`{"event_id": "...", "verdict": "confirmed" | "dismissed", "reason": "..."}`,
  answered with `{"ok": true, ...}` when it is a request);
* a console's verdict, `CameraFeedback` on `ops.verdict.<id>` (stream OPS);
* an operator alert that `confirms` a camera event (alerts.operator.*) counts
  as a confirmation;
* an incident closed as a false alarm (`incidents.<id>.resolved` or
  `.cancelled` whose detail says "false alarm") dismisses the camera events
  behind it (its `alert_ids` are the alerts' message ids).

The latest verdict on an event wins. Drill traffic (`exercise` set) is never
counted. The last three come from JetStream durable consumers (`FeedbackListener.run`),
one per source, named after the adapter's state dir, so verdicts given while the
adapter was down or away from the server are counted when it is back. `patrollink camera stats` prints the table:

    camera  rule       alerts  confirmed  dismissed  dismissed%
    cam01   intrusion      12          7          3         25%
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dispatch.events import Alert, CameraFeedback, IncidentEvent, describe_error

__all__ = [
    "FeedbackListener",
    "FeedbackStore",
    "StatsRow",
    "format_table",
    "is_false_alarm",
]

STATS_FILE = "camera-stats.sqlite"

_FALSE = re.compile(r"\bfalse[\s_\-]*(alarm|alert|positive)s?\b|误报|nuisance", re.IGNORECASE)


def is_false_alarm(text: str | None) -> bool:
    """Does a disposition or detail say the alert was false ('false alarm', 'false_alarm', '误报' ...)?"""
    return bool(text) and bool(_FALSE.search(text or ""))


@dataclass(frozen=True)
class StatsRow:
    camera: str
    rule: str
    alerts: int
    confirmed: int
    dismissed: int

    @property
    def dismissed_share(self) -> float:
        return self.dismissed / self.alerts if self.alerts else 0.0


class FeedbackStore:
    """Alerts raised and verdicts heard, in SQLite (`<state_dir>/camera-stats.sqlite`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=5.0, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS alerts (
                event_id TEXT PRIMARY KEY, camera TEXT NOT NULL, rule TEXT NOT NULL,
                priority INTEGER, first_at REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS alert_msgs (msg_id TEXT PRIMARY KEY, event_id TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS verdicts (
                key TEXT PRIMARY KEY, event_id TEXT, camera TEXT NOT NULL, rule TEXT NOT NULL,
                verdict TEXT NOT NULL, reason TEXT, source TEXT, at REAL NOT NULL);
            """
        )

    @classmethod
    def in_dir(cls, state_dir: str | Path) -> "FeedbackStore":
        return cls(Path(state_dir) / STATS_FILE)

    def close(self) -> None:
        self.db.close()

    # -- writing
    def record_alert(self, event_id: str, msg_id: str, camera: str, rule: str, phase: str, priority: int | None = None,
                     at: float | None = None) -> None:
        at = time.time() if at is None else at
        self.db.execute("INSERT OR IGNORE INTO alert_msgs(msg_id, event_id) VALUES (?, ?)", (msg_id, event_id))
        if phase == "new" or not self._known(event_id):
            self.db.execute(
                "INSERT OR IGNORE INTO alerts(event_id, camera, rule, priority, first_at) VALUES (?, ?, ?, ?, ?)",
                (event_id, camera, rule, priority, at),
            )

    def _known(self, event_id: str) -> tuple[str, str] | None:
        row = self.db.execute("SELECT camera, rule FROM alerts WHERE event_id = ?", (event_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def event_of(self, msg_id: str) -> str | None:
        row = self.db.execute("SELECT event_id FROM alert_msgs WHERE msg_id = ?", (msg_id,)).fetchone()
        return row[0] if row else None

    def verdict(self, event_id: str, verdict: str, reason: str = "", source: str = "operator",
                camera: str | None = None, rule: str | None = None) -> bool:
        """Record a verdict on a camera event; False when the event is unknown here and no camera/rule is given."""
        if verdict not in ("confirmed", "dismissed"):
            raise ValueError(f"verdict {verdict!r} is neither 'confirmed' nor 'dismissed'")
        known = self._known(event_id)
        if known is None:
            if camera is None or rule is None:
                return False
            known = (camera, rule)
        self.db.execute(
            "INSERT OR REPLACE INTO verdicts(key, event_id, camera, rule, verdict, reason, source, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (event_id, event_id, known[0], known[1], verdict, reason[:300], source, time.time()),
        )
        return True

    def dismiss_incident(self, incident_id: str, alert_ids: tuple[str, ...], camera: str | None, kind: str,
                         reason: str, cameras: set[str] | None = None) -> int:
        """An incident closed as a false alarm: dismiss every camera event behind it; return how many."""
        n = 0
        for mid in alert_ids:
            ev = self.event_of(mid)
            if ev is not None and self.verdict(ev, "dismissed", reason, source=f"incident:{incident_id}"):
                n += 1
        if n == 0 and camera and (cameras is None or camera in cameras):
            self.db.execute(
                "INSERT OR REPLACE INTO verdicts(key, event_id, camera, rule, verdict, reason, source, at) "
                "VALUES (?, NULL, ?, ?, 'dismissed', ?, ?, ?)",
                (f"incident:{incident_id}", camera, kind, reason[:300], f"incident:{incident_id}", time.time()),
            )
            n = 1
        return n

    # -- reading
    def table(self) -> list[StatsRow]:
        counts: dict[tuple[str, str], list[int]] = {}
        for cam, rule, n in self.db.execute("SELECT camera, rule, COUNT(*) FROM alerts GROUP BY camera, rule"):
            counts.setdefault((cam, rule), [0, 0, 0])[0] = n
        for cam, rule, verdict, n in self.db.execute(
            "SELECT camera, rule, verdict, COUNT(*) FROM verdicts GROUP BY camera, rule, verdict"
        ):
            c = counts.setdefault((cam, rule), [0, 0, 0])
            c[1 if verdict == "confirmed" else 2] += n
        return [StatsRow(cam, rule, *c) for (cam, rule), c in sorted(counts.items())]


def format_table(rows: list[StatsRow]) -> str:
    head = ["camera", "rule", "alerts", "confirmed", "dismissed", "dismissed%"]
    body = [[r.camera, r.rule, str(r.alerts), str(r.confirmed), str(r.dismissed),
             f"{r.dismissed_share:.0%}" if r.alerts else "-"] for r in rows]
    if rows:
        tot = StatsRow("total", "", sum(r.alerts for r in rows), sum(r.confirmed for r in rows), sum(r.dismissed for r in rows))
        body.append([tot.camera, "", str(tot.alerts), str(tot.confirmed), str(tot.dismissed),
                     f"{tot.dismissed_share:.0%}" if tot.alerts else "-"])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    right = {2, 3, 4, 5}
    fmt = lambda row: "  ".join(x.rjust(w) if i in right else x.ljust(w) for i, (x, w) in enumerate(zip(row, widths)))  # noqa: E731
    lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in body]
    return "\n".join(lines)


def consumer_token(state_dir: str | Path) -> str:
    """A random name kept in the state dir: the adapter's durable consumers are `camstats_<token>_<source>`,
    the same across restarts of this adapter and different for another one (another state dir)."""
    path = Path(state_dir) / "feedback.consumer"
    try:
        token = path.read_text().strip()
        if re.fullmatch(r"[A-Za-z0-9_-]{4,40}", token):
            return token
    except OSError:
        pass
    import uuid

    token = uuid.uuid4().hex[:12]
    path.write_text(token + "\n")
    return token


class FeedbackListener:
    """Fills the store from the feedback sources of the adapter's cameras: request/reply on
    `cameras.<id>.feedback` (core NATS: somebody waits for the answer) and, through JetStream
    durable pull consumers, console verdicts (OPS), operator confirmations (ALERTS) and incidents
    closed as false alarms (INCIDENTS)."""

    def __init__(self, store: FeedbackStore, subjects: Any, camera_ids: list[str], log: Any = None,
                 durable: str | None = None) -> None:
        self.store = store
        self.s = subjects
        self.cameras = set(camera_ids)
        self.log = log
        self.heard = 0
        self.durable = durable or "camstats"
        self.fetch_timeout_s = 1.0

    async def subscribe(self, nc: Any) -> list[Any]:
        """The request/reply subscriptions (core NATS)."""
        return [await nc.subscribe(self.s.camera_feedback(cid), cb=self._on_feedback) for cid in sorted(self.cameras)]

    def durables(self) -> list[tuple[str, str, list[str], Any]]:
        """(stream, durable name, filter subjects, handler) of the JetStream sources."""
        s = self.s
        return [
            (s.stream_ops, f"{self.durable}_verdicts", [s.verdict("*")], self._on_verdict),
            (s.stream_alerts, f"{self.durable}_confirms", [s.operator_alert("*")], self._on_operator_alert),
            (s.stream_incidents, f"{self.durable}_closed",
             [s.incident_event("*", "resolved"), s.incident_event("*", "cancelled")], self._on_incident),
        ]

    async def run(self, nc: Any) -> None:
        """Forever: read the durable consumers (created if missing, from new messages on), record, ack."""
        await asyncio.gather(*(self._pull(nc, *d) for d in self.durables()))

    async def _pull(self, nc: Any, stream: str, durable: str, filters: list[str], handler: Any) -> None:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        from dispatch.store import ensure_streams

        js = nc.jetstream()
        backoff = 0.5
        while True:
            try:
                try:
                    await js.consumer_info(stream, durable)
                except NotFoundError:
                    try:
                        await js.stream_info(stream)
                    except NotFoundError:
                        await ensure_streams(js, self.s)  # no engine has run yet
                    cfg = ConsumerConfig(
                        durable_name=durable, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.NEW,
                        ack_wait=30, max_ack_pending=1000,
                        **({"filter_subject": filters[0]} if len(filters) == 1 else {"filter_subjects": filters}),
                    )
                    await js.add_consumer(stream, cfg)
                psub = await js.pull_subscribe_bind(durable, stream)
                try:
                    while True:
                        try:
                            msgs = await psub.fetch(64, timeout=self.fetch_timeout_s)
                        except NatsTimeout:
                            continue
                        for m in msgs:
                            try:
                                await handler(m)
                            except Exception as e:  # a store error: leave it unacked, it comes again
                                self._warn("camera.feedback.failed", subject=m.subject, error=f"{type(e).__name__}: {e}")
                                continue
                            await m.ack()
                        backoff = 0.5
                finally:
                    try:
                        await psub.unsubscribe()
                    except Exception:
                        pass
            except asyncio.CancelledError:
                raise
            except Exception as e:  # server away, stream deleted ...: try again
                if self.log is not None:
                    self.log.debug("camera.feedback.consumer", durable=durable, error=f"{type(e).__name__}: {e}", retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _warn(self, what: str, **kw: Any) -> None:
        if self.log is not None:
            self.log.warning(what, **kw)

    async def _reply(self, msg: Any, body: dict[str, Any]) -> None:
        if msg.reply:
            try:
                await msg.respond(json.dumps(body).encode())
            except Exception:
                pass

    async def _on_feedback(self, msg: Any) -> None:
        cid = msg.subject.split(".")[-2]
        try:
            fb = CameraFeedback.model_validate_json(msg.data)
        except ValidationError as e:
            self._warn("camera.feedback.refused", subject=msg.subject, reason=describe_error(e))
            await self._reply(msg, {"ok": False, "error": describe_error(e)})
            return
        if fb.exercise is not None:
            await self._reply(msg, {"ok": True, "recorded": False, "note": "drill feedback is not counted"})
            return
        ok = self.store.verdict(fb.event_id, fb.verdict, fb.reason, source=fb.operator or "operator")
        self.heard += 1
        await self._reply(msg, {"ok": ok, "recorded": ok, "camera": cid, "event_id": fb.event_id,
                                **({} if ok else {"error": f"event {fb.event_id} is not one this adapter raised"})})

    async def _on_verdict(self, msg: Any) -> None:
        """A console's CameraFeedback on ops.verdict.<camera> (no reply: it is a stream message)."""
        try:
            fb = CameraFeedback.model_validate_json(msg.data)
        except ValidationError as e:
            self._warn("camera.feedback.refused", subject=msg.subject, reason=describe_error(e))
            return
        if fb.exercise is not None:
            return
        if self.store.verdict(fb.event_id, fb.verdict, fb.reason, source=fb.operator or "operator"):
            self.heard += 1

    async def _on_incident(self, msg: Any) -> None:
        try:
            ev = IncidentEvent.model_validate_json(msg.data)
        except ValidationError:
            return
        if ev.exercise is not None or not is_false_alarm(ev.detail):
            return
        n = self.store.dismiss_incident(ev.incident_id, ev.alert_ids, ev.camera, ev.kind.value, ev.detail, self.cameras)
        if n:
            self.heard += 1

    async def _on_operator_alert(self, msg: Any) -> None:
        try:
            a = Alert.model_validate_json(msg.data)
        except ValidationError:
            return
        if a.exercise is not None or not a.confirms:
            return
        if self.store.verdict(a.confirms, "confirmed", a.note, source=a.operator or "operator"):
            self.heard += 1
