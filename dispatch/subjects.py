"""Every NATS name PatrolLink uses: subjects, streams, buckets, queue groups.

No other module spells a subject; they call these functions. A prefix (default
empty) lets tests and side-by-side deployments share one server without their
traffic meeting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")


def check_token(value: str, what: str = "id") -> str:
    """Ids become subject tokens: no dots, spaces or wildcards."""
    if not _TOKEN.match(value or ""):
        raise ValueError(f"{what} {value!r} cannot be a subject token (use letters, digits, '_' or '-')")
    return value


UNIT_KEYS = "unit."
"""Key prefix of unit records in the state bucket (`Subjects.bucket_state`)."""
INCIDENT_KEYS = "incident."
"""Key prefix of incident records in the state bucket."""


@dataclass(frozen=True)
class Subjects:
    """Subject names under an optional prefix such as 't1a2b3c4' (tests) or 'site2'."""

    prefix: str = ""

    def _p(self, s: str) -> str:
        return f"{self.prefix}.{s}" if self.prefix else s

    # -- alerts
    def camera_alert(self, camera_id: str) -> str:
        return self._p(f"alerts.camera.{camera_id}")

    def operator_alert(self, console_id: str) -> str:
        return self._p(f"alerts.operator.{console_id}")

    @property
    def all_alerts(self) -> str:
        return self._p("alerts.>")

    # -- cameras
    def camera_health(self, camera_id: str) -> str:
        return self._p(f"cameras.{camera_id}.health")

    def camera_control(self, camera_id: str) -> str:
        return self._p(f"cameras.{camera_id}.control")

    def camera_feedback(self, camera_id: str) -> str:
        """An operator's verdict (confirmed / dismissed) on a camera detection event."""
        return self._p(f"cameras.{camera_id}.feedback")

    @property
    def all_camera_health(self) -> str:
        return self._p("cameras.*.health")

    # -- units
    def unit_position(self, unit_id: str) -> str:
        return self._p(f"units.{unit_id}.position")

    def unit_status(self, unit_id: str) -> str:
        return self._p(f"units.{unit_id}.status")

    @property
    def all_unit_positions(self) -> str:
        return self._p("units.*.position")

    @property
    def all_unit_status(self) -> str:
        return self._p("units.*.status")

    # -- radio
    def order(self, unit_id: str) -> str:
        return self._p(f"radio.{unit_id}.order")

    def reply(self, unit_id: str) -> str:
        return self._p(f"radio.{unit_id}.reply")

    def talkgroup(self, group: str, exercise: str | None = None) -> str:
        """Real traffic on radio.talkgroup.<group>; a drill's on radio.talkgroup.<group>.drill.<id>,
        which real radios (subscribed to radio.talkgroup.*) never hear."""
        if exercise:
            return self._p(f"radio.talkgroup.{group}.drill.{exercise}")
        return self._p(f"radio.talkgroup.{group}")

    @property
    def all_orders(self) -> str:
        return self._p("radio.*.order")

    @property
    def all_replies(self) -> str:
        return self._p("radio.*.reply")

    @property
    def all_talkgroups(self) -> str:
        return self._p("radio.talkgroup.*")

    # -- incidents
    def incident_event(self, incident_id: str, event: str) -> str:
        return self._p(f"incidents.{incident_id}.{event}")

    @property
    def all_incident_events(self) -> str:
        return self._p("incidents.>")

    # -- operator actions and verdicts (stream OPS)
    def incident_action(self, incident_id: str, action: str) -> str:
        return self._p(f"ops.incident.{incident_id}.{action}")

    @property
    def all_incident_actions(self) -> str:
        return self._p("ops.incident.>")

    def verdict(self, camera_id: str) -> str:
        """A camera alert confirmed or dismissed at a console, seen by every console."""
        return self._p(f"ops.verdict.{camera_id}")

    @property
    def all_ops(self) -> str:
        return self._p("ops.>")

    # -- training drills
    def drill_inject(self, drill: str | None = None) -> str:
        """A trainer adds an incident to a running drill (request/reply, DrillInject -> DrillInjectResult):
        drill.<id>.inject for one drill, drill.inject for whichever runs."""
        return self._p(f"drill.{check_token(drill, 'drill id')}.inject" if drill else "drill.inject")

    # -- dead letters
    def deadletter(self, subject: str) -> str:
        return self._p(f"deadletter.{subject}")

    @property
    def all_deadletters(self) -> str:
        return self._p("deadletter.>")

    # -- JetStream names (streams and buckets allow no dots)
    def _n(self, s: str) -> str:
        return f"{self.prefix}_{s}" if self.prefix else s

    @property
    def stream_alerts(self) -> str:
        return self._n("ALERTS")

    @property
    def stream_radio(self) -> str:
        return self._n("RADIO")

    @property
    def stream_incidents(self) -> str:
        return self._n("INCIDENTS")

    @property
    def stream_ops(self) -> str:
        return self._n("OPS")

    @property
    def stream_deadletter(self) -> str:
        return self._n("DEADLETTER")

    @property
    def bucket_state(self) -> str:
        """The key-value bucket of units and incidents (keys `unit.<id>` and `incident.<id>`). One bucket
        is one stream, so a decision's records can be written in one atomic batch (a release with the
        incident write that goes with it: both stored, or neither)."""
        return self._n("state")

    @staticmethod
    def unit_key(unit_id: str) -> str:
        return UNIT_KEYS + unit_id

    @staticmethod
    def incident_key(incident_id: str) -> str:
        return INCIDENT_KEYS + incident_id

    # key filters for a watch of the state bucket that wants one kind only
    unit_keys = UNIT_KEYS + ">"
    incident_keys = INCIDENT_KEYS + ">"

    @property
    def bucket_snapshots(self) -> str:
        return self._n("snapshots")

    @property
    def engine_hello(self) -> str:
        """An engine replica starting says so here (core NATS, request/reply); the others answer."""
        return self._p("engine.hello")

    @property
    def engine_queue(self) -> str:
        """Queue group (and durable consumer name) the engine replicas share."""
        return self._n("engine")

    def strip(self, subject: str) -> str:
        """The subject without the prefix, as the contract's table names it."""
        if self.prefix and subject.startswith(self.prefix + "."):
            return subject[len(self.prefix) + 1 :]
        return subject


DEFAULT = Subjects()
