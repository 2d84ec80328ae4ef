"""Console names, now in the shared contract (dispatch/events.py, dispatch/subjects.py);
kept as thin aliases so the console's modules read as before."""

from __future__ import annotations

from typing import Any

from dispatch.events import IncidentAction
from dispatch.store import ensure_streams
from dispatch.subjects import Subjects

__all__ = ["ACTIONS", "IncidentAction", "action_subject", "all_actions", "verdict_subject", "all_ops", "ops_stream", "ensure_ops_stream"]

ACTIONS = ("close", "cancel", "reassign", "escalate")


def action_subject(s: Subjects, incident_id: str, action: str) -> str:
    return s.incident_action(incident_id, action)


def all_actions(s: Subjects) -> str:
    return s.all_incident_actions


def verdict_subject(s: Subjects, camera_id: str) -> str:
    return s.verdict(camera_id)


def all_ops(s: Subjects) -> str:
    return s.all_ops


def ops_stream(s: Subjects) -> str:
    return s.stream_ops


async def ensure_ops_stream(js: Any, s: Subjects, replicas: int = 1) -> None:
    """The OPS stream (with the others) exists: the console may start before the engine."""
    await ensure_streams(js, s, replicas=replicas)
