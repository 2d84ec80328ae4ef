"""Incident and unit lifecycles as transition tables.

A (state, trigger) pair missing from a table is a transition the engine refuses;
the caller turns that into a dead letter or ignores it, never into a crash.
"""

from __future__ import annotations

from enum import StrEnum

from dispatch.core.records import IncidentState as I
from dispatch.core.records import UnitState as U


class UnitTrigger(StrEnum):
    order_sent = "order_sent"
    ack = "ack"
    decline = "decline"
    timeout = "timeout"
    en_route = "en_route"
    on_scene = "on_scene"
    cleared = "cleared"
    withdrawn = "withdrawn"  # order cancelled: pre-empted, incident closed, reassigned
    report_available = "report_available"
    report_busy = "report_busy"
    report_off_duty = "report_off_duty"


class IncidentTrigger(StrEnum):
    assign = "assign"
    ack = "ack"
    decline = "decline"
    timeout = "timeout"
    en_route = "en_route"
    on_scene = "on_scene"
    cleared = "cleared"
    preempt = "preempt"
    unit_lost = "unit_lost"  # assigned unit went busy / off duty
    no_candidate = "no_candidate"
    close = "close"
    cancel = "cancel"


_WORKING = (U.acknowledged, U.en_route, U.on_scene)

UNIT_TABLE: dict[tuple[U, UnitTrigger], U] = {
    (U.available, UnitTrigger.order_sent): U.assigned,
    (U.assigned, UnitTrigger.ack): U.acknowledged,
    (U.assigned, UnitTrigger.decline): U.available,
    (U.assigned, UnitTrigger.timeout): U.available,
    (U.assigned, UnitTrigger.withdrawn): U.available,
    # an officer who sets off without pressing "acknowledge" has acknowledged
    (U.assigned, UnitTrigger.en_route): U.en_route,
    (U.assigned, UnitTrigger.on_scene): U.on_scene,
    (U.acknowledged, UnitTrigger.en_route): U.en_route,
    (U.acknowledged, UnitTrigger.on_scene): U.on_scene,
    (U.en_route, UnitTrigger.on_scene): U.on_scene,
    **{(s, UnitTrigger.cleared): U.available for s in (U.assigned, *_WORKING)},
    **{(s, UnitTrigger.withdrawn): U.available for s in _WORKING},
    **{(s, UnitTrigger.report_available): U.available for s in (U.available, U.busy, U.off_duty)},
    **{(s, UnitTrigger.report_busy): U.busy for s in (U.available, U.busy, U.off_duty, U.assigned, *_WORKING)},
    **{(s, UnitTrigger.report_off_duty): U.off_duty for s in (U.available, U.busy, U.off_duty, U.assigned, *_WORKING)},
}

_WAITING = (I.new, I.queued, I.escalated)
_UNDERWAY = (I.assigned, I.acknowledged, I.en_route, I.on_scene)

INCIDENT_TABLE: dict[tuple[I, IncidentTrigger], I] = {
    **{(s, IncidentTrigger.assign): I.assigned for s in _WAITING},
    **{(s, IncidentTrigger.no_candidate): I.escalated for s in _WAITING},
    (I.assigned, IncidentTrigger.ack): I.acknowledged,
    (I.assigned, IncidentTrigger.decline): I.queued,
    (I.assigned, IncidentTrigger.timeout): I.queued,
    (I.assigned, IncidentTrigger.en_route): I.en_route,
    (I.acknowledged, IncidentTrigger.en_route): I.en_route,
    (I.assigned, IncidentTrigger.on_scene): I.on_scene,
    (I.acknowledged, IncidentTrigger.on_scene): I.on_scene,
    (I.en_route, IncidentTrigger.on_scene): I.on_scene,
    **{(s, IncidentTrigger.cleared): I.resolved for s in _UNDERWAY},
    **{(s, IncidentTrigger.preempt): I.queued for s in (I.assigned, I.acknowledged, I.en_route)},
    **{(s, IncidentTrigger.unit_lost): I.queued for s in _UNDERWAY},
    **{(s, IncidentTrigger.close): I.resolved for s in (*_WAITING, *_UNDERWAY)},
    **{(s, IncidentTrigger.cancel): I.cancelled for s in (*_WAITING, *_UNDERWAY)},
}


class TransitionRefused(ValueError):
    pass


def unit_next(state: U, trigger: UnitTrigger) -> U:
    try:
        return UNIT_TABLE[(state, trigger)]
    except KeyError:
        raise TransitionRefused(f"a unit that is {state.value} cannot take '{trigger.value}'") from None


def incident_next(state: I, trigger: IncidentTrigger) -> I:
    try:
        return INCIDENT_TABLE[(state, trigger)]
    except KeyError:
        raise TransitionRefused(f"an incident that is {state.value} cannot take '{trigger.value}'") from None
