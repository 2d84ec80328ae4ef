"""A drill's score: report.json, PNG plots (matplotlib, Agg) and report.html.

    report = build_report(facts, events, fleet=fleet)    # a dict; numbers from the incident events
    write_report(report, out_dir, district, graph, fleet)  # report.json, timeline.png, response.png, map.png, report.html

Where the numbers come from: the incident events of this drill on the INCIDENTS
stream (read back at the end, filtered by the drill's exercise id) and the
ground truth the drill recorded (when each scripted incident began in the
video, when each operator report went out). Nothing is taken from the
simulators' own idea of what happened, except the hindsight check (where each
candidate unit truly was when the order went out).

Times: every message carries wall-clock UTC. The drill ran `speed` times faster
than real time from the alert on (engine timeouts, units, travel), so the
durations after the alert are wall seconds x speed = simulated seconds. The
video plays at real time (detectors measure real speeds and dwell times), so
the detection delay (incident start in the video -> alert) is real seconds, not
scaled. See docs/drills.md.
"""

from __future__ import annotations

import html
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dispatch.events import IncidentEvent

__all__ = ["STAGES", "build_report", "incident_times", "match_incidents", "percentiles", "write_report"]

STAGES = ("order", "ack", "on_scene", "resolved")
"""Durations measured from the alert, in simulated seconds."""

CLOSED = {"resolved", "cancelled"}

_ALSO = {"suspicious": ("fight", "running")}
"""Alert kinds that a truth event of another kind explains: the camera adapter calls a running person
`suspicious`; in the video a runner is the end of a scuffle (or a scripted run)."""


def _ts(d: datetime | str) -> float:
    if isinstance(d, str):
        d = datetime.fromisoformat(d.replace("Z", "+00:00"))
    return d.timestamp()


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def percentiles(values: Sequence[float], ps: Iterable[int] = (50, 90, 100)) -> dict[str, float | None]:
    """Linear-interpolated percentiles ('p50', 'p90', 'max'); None when there are no values."""
    vals = sorted(v for v in values if v is not None)
    out: dict[str, float | None] = {}
    for p in ps:
        key = "max" if p == 100 else f"p{p}"
        if not vals:
            out[key] = None
            continue
        k = (len(vals) - 1) * p / 100.0
        lo, hi = math.floor(k), math.ceil(k)
        out[key] = round(vals[lo] + (vals[hi] - vals[lo]) * (k - lo), 2)
    out["mean"] = round(sum(vals) / len(vals), 2) if vals else None
    out["n"] = len(vals)
    return out


# --------------------------------------------------------------------------- from incident events


def group_events(events: Iterable[IncidentEvent]) -> dict[str, list[IncidentEvent]]:
    by: dict[str, list[IncidentEvent]] = defaultdict(list)
    for e in events:
        by[e.incident_id].append(e)
    for evs in by.values():
        evs.sort(key=lambda e: e.seq)
    return dict(by)


def _first(evs: list[IncidentEvent], *kinds: str) -> IncidentEvent | None:
    return next((e for e in evs if e.event.value in kinds), None)


def incident_times(evs: list[IncidentEvent]) -> dict[str, Any]:
    """Wall times (UNIX s) of one incident's stages, straight from its events.

    alert = opened; order = first assigned; ack = first acknowledged (or, without one, the first
    en_route: moving counts as acknowledging); on_scene = first on_scene; resolved = resolved or
    cancelled. unit = the unit that reached the scene (else the last one that acknowledged, else
    the last one ordered).
    """
    opened = _first(evs, "opened")
    assigned = _first(evs, "assigned")
    ack = _first(evs, "acknowledged") or _first(evs, "en_route")
    on_scene = _first(evs, "on_scene")
    closed = _first(evs, "resolved", "cancelled")
    serving = on_scene or next((e for e in reversed(evs) if e.event.value in ("acknowledged", "en_route")), None)
    unit = serving.unit if serving is not None else next((e.unit for e in reversed(evs) if e.event.value == "assigned"), None)
    served_order = next((e for e in evs if e.event.value == "assigned" and e.unit == unit), None)
    first = evs[0]
    return {
        "incident_id": first.incident_id,
        "kind": (opened or first).kind.value,
        "priority": evs[-1].priority,
        "camera": (opened or first).camera,
        "place": {"lat": first.place.lat, "lon": first.place.lon, "description": first.place.description},
        "alert": _ts(opened.time) if opened else None,
        "order": _ts(assigned.time) if assigned else None,
        "ack": _ts(ack.time) if ack else None,
        "on_scene": _ts(on_scene.time) if on_scene else None,
        "resolved": _ts(closed.time) if closed else None,
        "closed_as": closed.event.value if closed else None,
        "state": evs[-1].state,
        "unit": unit,
        "alert_ids": sorted({a for e in evs for a in e.alert_ids}),
        "served_order": served_order,
        "first_order": assigned,
        "attempts": [
            {"event": e.event.value, "unit": e.unit, "t": _ts(e.time), "detail": e.detail}
            for e in evs if e.event.value in ("assigned", "declined", "timed_out", "preempted", "requeued", "escalated")
        ],
    }


def match_incidents(scripted: list[dict[str, Any]], incidents: dict[str, dict[str, Any]], grace_s: float = 60.0) -> dict[int, str]:
    """Scripted incident number -> incident id.

    Operator reports match by the alert id they carried (exactly). Camera incidents match the
    earliest incident opened at that camera after the incident was injected and before its truth
    ended + grace_s (wall), preferring the expected kind; an incident is matched once.
    """
    out: dict[int, str] = {}
    taken: set[str] = set()
    for s in scripted:
        if s.get("alert_id"):
            for iid, inc in incidents.items():
                if s["alert_id"] in inc["alert_ids"]:
                    out[s["n"]] = iid
                    taken.add(iid)
                    break
    for s in sorted(scripted, key=lambda s: s.get("injected_wall") or 0.0):
        if s["n"] in out or not s.get("camera") or s.get("injected_wall") is None:
            continue
        lo = s["injected_wall"] - 1.0
        truth = s.get("truth") or {}
        hi = max(truth.get("end_wall") or 0.0, truth.get("start_wall") or 0.0, s["injected_wall"]) + grace_s
        cands = [
            (inc["kind"] != s["expected_kind"], inc["alert"], iid)
            for iid, inc in incidents.items()
            if iid not in taken and inc["camera"] == s["camera"] and inc["alert"] is not None and lo <= inc["alert"] <= hi
        ]
        if cands:
            cands.sort()  # the expected kind first, then the earliest
            out[s["n"]] = cands[0][2]
            taken.add(cands[0][2])
    return out


# --------------------------------------------------------------------------- the report


def _stage_s(t: dict[str, Any], speed: float) -> dict[str, float | None]:
    a = t["alert"]
    return {k: (None if t[k] is None or a is None else round((t[k] - a) * speed, 2)) for k in STAGES}


def _hindsight(t: dict[str, Any], fleet: Any, sim_of: Any) -> dict[str, Any] | None:
    """The order the incident was served by: was that unit the best, knowing where everyone truly was?"""
    ev = t["served_order"]
    if ev is None:
        return None
    expl = ev.explanation
    cands = list(expl.candidates) if expl is not None else []
    at_the_time = min(cands, key=lambda c: c.eta_s) if cands else None
    out: dict[str, Any] = {
        "order_unit": ev.unit,
        "engine_eta_s": ev.eta_s,
        "best_engine_eta_s": at_the_time.eta_s if at_the_time else ev.eta_s,
        "best_at_the_time": at_the_time is None or at_the_time.unit == ev.unit,
        "candidates": len(cands),
    }
    if fleet is not None and cands and all(c.unit in fleet.units for c in cands):
        t_sim = sim_of(_ts(ev.time))
        place = (t["place"]["lat"], t["place"]["lon"])
        true = {c.unit: round(fleet.eta(c.unit, t_sim, place), 1) for c in cands}
        best = min(true, key=lambda u: (true[u], u))
        out.update({
            "true_eta_s": true.get(ev.unit),
            "best_unit_in_hindsight": best,
            "best_true_eta_s": true[best],
            "lost_s": round(max(0.0, true.get(ev.unit, true[best]) - true[best]), 1),
        })
        out["best_in_hindsight"] = best == ev.unit or out["lost_s"] < 1.0
    else:
        out["best_in_hindsight"] = out["best_at_the_time"]
    return out


def build_report(facts: dict[str, Any], events: Iterable[IncidentEvent], fleet: Any = None) -> dict[str, Any]:
    """The report as a dict (report.json). `facts` is what the drill recorded (see simulators/drill.py)."""
    d = facts["drill"]
    speed = float(d["speed"])
    wall0 = float(d["wall0"])

    def sim_of(w: float | None) -> float | None:
        return None if w is None else round((w - wall0) * speed, 2)

    evs = [e for e in events if e.exercise == d["id"]]
    incidents = {iid: incident_times(x) for iid, x in group_events(evs).items()}
    scripted = facts["scripted"]
    matched = match_incidents(scripted, incidents)
    by_incident = {v: k for k, v in matched.items()}
    targets = facts["targets"]

    rows = []
    for s in scripted:
        iid = matched.get(s["n"])
        t = incidents.get(iid) if iid else None
        truth = s.get("truth") or {}
        start_wall = truth.get("start_wall") if s.get("camera") else s.get("injected_wall")
        row: dict[str, Any] = {
            "n": s["n"], "source": s["source"], "at_s": s["at_s"], "camera": s.get("camera"), "place": s.get("place"),
            "scripted_kind": s["kind"], "expected_kind": s["expected_kind"], "description": s.get("description", ""),
            "started": _iso(start_wall), "started_s": sim_of(start_wall),
            "truth": {k: v for k, v in truth.items() if k not in ("start_wall", "end_wall")} | {
                "start": _iso(truth.get("start_wall")), "end": _iso(truth.get("end_wall"))} if truth else None,
            "incident_id": iid, "detected": t is not None,
        }
        if t is not None:
            stages = _stage_s(t, speed)
            detect = None if t["alert"] is None or start_wall is None else round(t["alert"] - start_wall, 2)
            row.update({
                "kind": t["kind"], "kind_as_expected": t["kind"] == s["expected_kind"], "priority": t["priority"],
                "alert": _iso(t["alert"]), "order": _iso(t["order"]), "ack": _iso(t["ack"]), "on_scene": _iso(t["on_scene"]),
                "resolved": _iso(t["resolved"]), "closed_as": t["closed_as"], "state": t["state"],
                "alert_s": sim_of(t["alert"]), "detect_s": detect, "stages_s": stages, "unit": t["unit"],
                "attempts": [{**a, "t_s": sim_of(a.pop("t"))} for a in [dict(x) for x in t["attempts"]]],
                "hindsight": _hindsight(t, fleet, lambda w: (w - wall0) * speed),
            })
            row["best_choice"] = (row["hindsight"] or {}).get("best_in_hindsight")
            row["met"] = {
                "order": stages["order"] is not None and stages["order"] <= targets["order_within_s"],
                "on_scene": stages["on_scene"] is not None and stages["on_scene"] <= targets["on_scene_within_s"],
            }
        else:
            row["met"] = {"order": False, "on_scene": False}
        rows.append(row)

    # incidents nobody scripted: true detections of something else in the video, or false alerts
    truth_by_cam = facts.get("camera_truth", {})
    related, false_alerts = [], []
    for iid, t in sorted(incidents.items(), key=lambda kv: kv[1]["alert"] or 0.0):
        if iid in by_incident:
            continue
        entry = {"incident_id": iid, "kind": t["kind"], "camera": t["camera"], "alert_s": sim_of(t["alert"]),
                 "unit": t["unit"], "state": t["state"], "stages_s": _stage_s(t, speed)}
        if t["camera"] is None:
            related.append({**entry, "why": "operator report not in the timeline (e.g. `patrollink alert`)"})
            continue
        hit = next((e for e in truth_by_cam.get(t["camera"], [])
                    if (e.get("incident_kind") == t["kind"] or e["kind"] in _ALSO.get(t["kind"], ())) and t["alert"] is not None
                    and e["start_wall"] - 2.0 <= t["alert"] <= (e.get("end_wall") or e["start_wall"] + 3600.0) + 30.0), None)
        failure = next((f for f in facts.get("failures", []) if f.get("camera") == t["camera"] and t["kind"] == "camera_offline"
                        and t["alert"] is not None and t["alert"] >= f["wall"]), None)
        if failure is not None:
            related.append({**entry, "why": f"failure #{failure['n']}: {failure['what']}"})
        elif hit is not None:
            related.append({**entry, "why": f"{hit['kind']} in the video (not the scripted incident itself)"})
        else:
            false_alerts.append(entry)

    # totals
    n = len(rows)
    cam_rows = [r for r in rows if r["camera"]]
    det = [r for r in cam_rows if r["detected"]]
    recall = len(det) / len(cam_rows) if cam_rows else None
    camera_hours = float(facts.get("camera_hours") or 0.0)
    stage_vals = {k: [r["stages_s"][k] for r in rows if r.get("stages_s") and r["stages_s"][k] is not None] for k in STAGES}
    order_ok = sum(1 for r in rows if r["met"]["order"])
    scene_ok = sum(1 for r in rows if r["met"]["on_scene"])
    verdicts = {
        "order": {"target": f"order within {targets['order_within_s']:g} s of the alert for {targets['order_fraction']:.0%}",
                  "fraction": round(order_ok / n, 3) if n else None, "pass": (order_ok / n >= targets["order_fraction"]) if n else True},
        "on_scene": {"target": f"on scene within {targets['on_scene_within_s']:g} s of the alert for {targets['on_scene_fraction']:.0%}",
                     "fraction": round(scene_ok / n, 3) if n else None, "pass": (scene_ok / n >= targets["on_scene_fraction"]) if n else True},
        "recall": {"target": f"cameras detect {targets['recall']:.0%} of the scripted camera incidents",
                   "fraction": None if recall is None else round(recall, 3), "pass": recall is None or recall >= targets["recall"]},
    }
    if targets.get("detect_within_s"):
        ok = sum(1 for r in cam_rows if r.get("detect_s") is not None and r["detect_s"] <= targets["detect_within_s"])
        verdicts["detect"] = {"target": f"camera alert within {targets['detect_within_s']:g} s (real) of the incident's start",
                              "fraction": round(ok / len(cam_rows), 3) if cam_rows else None,
                              "pass": (ok / len(cam_rows) >= targets["order_fraction"]) if cam_rows else True}
    checks = facts.get("checks", {})
    checks_ok = all(c.get("pass", True) for c in checks.values()) if isinstance(checks, dict) else True
    passed = all(v["pass"] for v in verdicts.values()) and checks_ok and not d.get("interrupted")
    totals = {
        "scripted": n,
        "camera_incidents": len(cam_rows),
        "detected": len(det),
        "dispatched": sum(1 for r in rows if r.get("order")),
        "acknowledged": sum(1 for r in rows if r.get("ack")),
        "served": sum(1 for r in rows if r.get("on_scene")),
        "resolved": sum(1 for r in rows if r.get("closed_as") == "resolved"),
        "best_choice": sum(1 for r in rows if r.get("best_choice")),
        "incidents_total": len(incidents),
        "related_incidents": len(related),
        "false_alerts": len(false_alerts),
        "detection_recall": None if recall is None else round(recall, 3),
        "camera_hours": round(camera_hours, 4),
        "false_alerts_per_camera_hour": round(len(false_alerts) / camera_hours, 2) if camera_hours > 0 else None,
        "timeouts": sum(1 for t in incidents.values() for a in t["attempts"] if a["event"] == "timed_out"),
        "declines": sum(1 for t in incidents.values() for a in t["attempts"] if a["event"] == "declined"),
        "escalations": sum(1 for t in incidents.values() for a in t["attempts"] if a["event"] == "escalated"),
    }
    return {
        "drill": d,
        "targets": targets,
        "result": "PASS" if passed else "FAIL",
        "verdicts": verdicts,
        "totals": totals,
        "percentiles_s": {"detect_real_s": percentiles([r["detect_s"] for r in cam_rows if r.get("detect_s") is not None]),
                          **{k: percentiles(v) for k, v in stage_vals.items()}},
        "incidents": rows,
        "related": related,
        "false_alerts": false_alerts,
        "failures": facts.get("failures", []),
        "checks": checks,
        "notes": [
            "Durations after the alert are simulated seconds: wall seconds x speed.",
            "detect_s (incident start in the video -> alert) is real seconds: the video plays at real time.",
            "best_choice: the unit that served was the fastest of the engine's candidates from where each truly was "
            "when the order went out (simulated units); for real units, the fastest by the engine's estimate.",
        ],
    }


# --------------------------------------------------------------------------- files


def write_report(report: dict[str, Any], out_dir: str | Path, district: Any = None, graph: Any = None,
                 fleet: Any = None, cameras: Sequence[str] = ()) -> dict[str, Path]:
    """report.json, timeline.png, response.png, map.png, report.html in out_dir; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json"}
    paths["json"].write_text(json.dumps(report, indent=1, default=str))
    import matplotlib

    matplotlib.use("Agg")
    paths["timeline"] = _plot_timeline(report, out / "timeline.png")
    paths["response"] = _plot_response(report, out / "response.png")
    if district is not None:
        paths["map"] = _plot_map(report, out / "map.png", district, graph, fleet, cameras)
    paths["html"] = _html(report, out / "report.html", paths)
    return paths


_STAGE_COLORS = {"detect": "#9e9e9e", "order": "#ef6c00", "ack": "#f9a825", "on_scene": "#1e88e5", "resolved": "#43a047"}
_STAGE_LABELS = {"detect": "until the alert (video: real time)", "order": "alert to order", "ack": "order to acknowledgement",
                 "on_scene": "acknowledged to on scene", "resolved": "on scene to cleared"}
_UNIT_COLORS = {"police": "#1565c0", "auxiliary": "#2e7d32", "volunteer": "#ef6c00"}


def _mmss(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60}:{s % 60:02d}"


def _plot_timeline(report: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = report["incidents"]
    extra = report["related"] + report["false_alerts"]
    n = len(rows) + len(extra)
    fig, ax = plt.subplots(figsize=(12, 1.6 + 0.42 * max(n, 1)), dpi=110)
    labels = []
    tgt = report["targets"]
    y = 0

    def bars(alert_s: float, stages: dict[str, float | None], started_s: float | None, yy: float) -> None:
        if started_s is not None and started_s < alert_s:
            ax.barh(yy, (alert_s - started_s) / 60.0, left=started_s / 60.0, height=0.55, color=_STAGE_COLORS["detect"], lw=0)
        prev = 0.0
        for k in STAGES:
            v = stages.get(k)
            if v is None:
                continue
            ax.barh(yy, (v - prev) / 60.0, left=(alert_s + prev) / 60.0, height=0.55, color=_STAGE_COLORS[k], lw=0)
            prev = v

    for r in rows:
        who = r["camera"] or "operator"
        lab = f"#{r['n']} {who} {r['expected_kind']}"
        if r.get("unit"):
            lab += f" -> {r['unit']}"
        labels.append(lab)
        if r.get("alert_s") is not None:
            bars(r["alert_s"], r["stages_s"], r.get("started_s"), y)
            ax.plot(r["at_s"] / 60.0, y, marker="|", color="#424242", ms=12, mew=1.5)
            for a in r.get("attempts", []):
                if a["event"] in ("timed_out", "declined") and a.get("t_s") is not None:
                    ax.plot(a["t_s"] / 60.0, y, marker="x", color="#c62828", ms=8, mew=2)
                    ax.annotate(f"{a['unit']} {a['event'].replace('_', ' ')}", (a["t_s"] / 60.0, y + 0.33), fontsize=7, color="#c62828")
                if a["event"] == "escalated" and a.get("t_s") is not None:
                    ax.plot(a["t_s"] / 60.0, y, marker="^", color="#6a1b9a", ms=8)
            a0 = r["alert_s"] / 60.0
            ax.plot([a0 + tgt["order_within_s"] / 60.0] * 2, [y - 0.35, y + 0.35], color="#ef6c00", lw=1, ls=":")
            ax.plot([a0 + tgt["on_scene_within_s"] / 60.0] * 2, [y - 0.35, y + 0.35], color="#1e88e5", lw=1, ls=":")
        else:
            start = r.get("started_s") if r.get("started_s") is not None else r["at_s"]
            ax.plot(start / 60.0, y, marker="o", mfc="none", color="#c62828")
            ax.annotate("not detected", (start / 60.0 + 0.1, y - 0.1), fontsize=8, color="#c62828")
        y += 1
    for e in extra:
        lab = f"({e['camera'] or 'operator'} {e['kind']})"
        labels.append(lab)
        if e.get("alert_s") is not None:
            bars(e["alert_s"], e["stages_s"], None, y)
        y += 1
    ax.set_yticks(range(n))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    for k, f in enumerate(report.get("failures", [])):
        x = f["at_s"] / 60.0
        ax.axvline(x, color="#6a1b9a", ls="--", lw=1, alpha=0.8)
        ax.annotate(f"failure #{f['n']}: {f['what']}", (x, n - 0.5), xytext=(3, 4 + 10 * k), textcoords="offset points",
                    fontsize=7, color="#6a1b9a", rotation=0, va="bottom", annotation_clip=False,
                    bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
    ax.set_xlabel("drill time (simulated minutes)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlim(left=-0.2)
    handles = [Line2D([], [], marker="|", color="#424242", ls="", ms=10, mew=1.5, label="scheduled")]
    handles += [Patch(color=_STAGE_COLORS[k], label=_STAGE_LABELS[k]) for k in ("detect", *STAGES)]
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=6, fontsize=8, frameon=False)
    d = report["drill"]
    fig.suptitle(f"{d['scenario']}  ({d['id']}, {d['speed']:g}x, seed {d['seed']}): {report['result']}    "
                 f"dotted ticks: order / on-scene targets", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _plot_response(report: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    tgt = report["targets"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=110)
    n = len(report["incidents"])
    for ax, key, within, frac, title in (
        (axes[0], "order", tgt["order_within_s"], tgt["order_fraction"], "alert to order"),
        (axes[1], "on_scene", tgt["on_scene_within_s"], tgt["on_scene_fraction"], "alert to unit on scene"),
    ):
        vals = sorted(r["stages_s"][key] for r in report["incidents"] if r.get("stages_s") and r["stages_s"][key] is not None)
        missing = n - len(vals)
        if vals:
            ys = [(i + 1) / n for i in range(len(vals))]
            ax.step([0.0] + vals, [0.0] + ys, where="post", color=_STAGE_COLORS[key], lw=2)
            ax.plot(vals, ys, "o", color=_STAGE_COLORS[key], ms=4)
        top = max(vals + [within]) * 1.15 if vals else within * 1.3
        ax.axvline(within, color="#c62828", ls="--", lw=1)
        ax.axhline(frac, color="#c62828", ls=":", lw=1)
        ax.fill_between([0, within], frac, 1.02, color="#43a047", alpha=0.08)
        v = report["verdicts"][key]
        got = "-" if v["fraction"] is None else f"{v['fraction']:.0%}"
        ax.set_title(f"{title}: {got} within {within:g} s (target {frac:.0%}) - {'PASS' if v['pass'] else 'FAIL'}"
                     + (f"; {missing} never" if missing else ""), fontsize=10, color="#2e7d32" if v["pass"] else "#c62828")
        ax.set_xlim(0, top)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("simulated seconds after the alert")
        ax.set_ylabel("fraction of scripted incidents")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _plot_map(report: dict[str, Any], path: Path, district: Any, graph: Any, fleet: Any, cameras: Sequence[str]) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(13, 8.6), dpi=110)
    if graph is not None:
        segs = []
        seen = set()
        for mode in ("foot", "car"):
            for a, b, _ in graph.edges(mode):
                key = (min(a, b), max(a, b))
                if key in seen:
                    continue
                seen.add(key)
                (la, lo), (lb, lob) = graph.coords(a), graph.coords(b)
                segs.append([(lo, la), (lob, lb)])
        ax.add_collection(LineCollection(segs, colors="#bdbdbd", linewidths=0.7, zorder=1))
    for c in district.communities:
        xs = [p[1] for p in c.boundary] + [c.boundary[0][1]]
        ys = [p[0] for p in c.boundary] + [c.boundary[0][0]]
        ax.plot(xs, ys, color="#90a4ae", lw=0.6, ls="--", zorder=0)
        cen = c.centroid
        ax.text(cen.lon, cen.lat, c.name, fontsize=7, color="#78909c", ha="center", va="center", zorder=0)
    end_s = (report["drill"].get("sim_s") or 0.0)
    if fleet is not None:
        kinds = {u.id: u.kind for u in district.units}
        for uid, u in fleet.units.items():  # where each unit went: thin
            xs, ys = [], []
            legs = [lg for lg in u.legs if lg.t0 <= end_s]
            for k, leg in enumerate(legs):
                until = min(end_s, legs[k + 1].t0) if k + 1 < len(legs) else end_s  # a leg cut short by the next
                for la, lo in leg.path_until(until):
                    xs.append(lo)
                    ys.append(la)
            col = _UNIT_COLORS.get(str(kinds.get(uid)), "#546e7a")
            ax.plot(xs, ys, color=col, lw=0.7, alpha=0.4, zorder=2)
            if xs:
                ax.plot(xs[0], ys[0], "o", color=col, ms=3, alpha=0.6, zorder=3)
        starts = {}
        for uid, iid, leg in fleet.drives:  # every drive to a scene: bold, from where the unit acknowledged
            u = fleet.units[uid]
            nxt = next((lg.t0 for lg in u.legs if lg.t0 > leg.t0), end_s)
            pts = leg.path_until(min(nxt, end_s))
            col = _UNIT_COLORS.get(str(kinds.get(uid)), "#546e7a")
            ax.plot([p[1] for p in pts], [p[0] for p in pts], color=col, lw=2.2, alpha=0.95, zorder=4, solid_capstyle="round")
            ax.plot(pts[0][1], pts[0][0], "o", color=col, mec="white", ms=6, zorder=5)
            key = (round(pts[0][0], 4), round(pts[0][1], 4))
            if key not in starts:
                starts[key] = uid
                ax.annotate(uid, (pts[0][1], pts[0][0]), xytext=(4, -9), textcoords="offset points", fontsize=7, color=col,
                            weight="bold", zorder=6)
    drilled = set(cameras)
    for cam in district.cameras:
        on = cam.id in drilled
        ax.plot(cam.position.lon, cam.position.lat, marker="^", ms=8 if on else 5, color="#6a1b9a" if on else "#b39ddb",
                mec="white", zorder=4)
        if on:
            ax.annotate(cam.id, (cam.position.lon, cam.position.lat), xytext=(4, 4), textcoords="offset points", fontsize=7, color="#6a1b9a")
    for r in report["incidents"]:
        if r["camera"]:
            cam = district.camera(r["camera"])
            lat, lon = cam.position.lat, cam.position.lon
        else:
            lat, lon = r["place"]["lat"], r["place"]["lon"]
        col = "#2e7d32" if r["met"]["on_scene"] else "#c62828"
        ax.plot(lon, lat, marker="*", ms=16, color=col, mec="black", mew=0.6, zorder=5)
        ax.annotate(f"#{r['n']}", (lon, lat), xytext=(6, -10), textcoords="offset points", fontsize=8, weight="bold", zorder=6)
    s, w, n_, e = district.bbox
    ax.set_xlim(w - 0.001, e + 0.001)
    ax.set_ylim(s - 0.001, n_ + 0.001)
    ax.set_aspect(1.0 / math.cos(math.radians((s + n_) / 2)))
    ax.ticklabel_format(useOffset=False)
    ax.tick_params(labelsize=7)
    handles = [
        Line2D([], [], color=_UNIT_COLORS["police"], label="police track"),
        Line2D([], [], color=_UNIT_COLORS["auxiliary"], label="auxiliary track"),
        Line2D([], [], color=_UNIT_COLORS["volunteer"], label="volunteer track"),
        Line2D([], [], color="#546e7a", lw=2.2, marker="o", mec="white", label="drive to a scene (from where it acknowledged)"),
        Line2D([], [], marker="^", color="#6a1b9a", ls="", label="camera in the drill"),
        Line2D([], [], marker="*", color="#2e7d32", mec="black", ls="", ms=12, label="incident, on scene in time"),
        Line2D([], [], marker="*", color="#c62828", mec="black", ls="", ms=12, label="incident, late or not served"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    d = report["drill"]
    ax.set_title(f"{district.name}: streets, cameras, incidents and unit tracks ({d['id']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _fmt(v: Any, unit: str = "s") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f} {unit}".strip()
    return html.escape(str(v))


def _html(report: dict[str, Any], path: Path, paths: dict[str, Path]) -> Path:
    d = report["drill"]
    ok = report["result"] == "PASS"
    e = html.escape
    rows = []
    for r in report["incidents"]:
        st = r.get("stages_s") or {}
        hs = r.get("hindsight") or {}
        best = "-" if r.get("best_choice") is None else ("yes" if r["best_choice"] else f"no ({hs.get('best_unit_in_hindsight')}, {hs.get('lost_s')} s faster)")
        tries = ", ".join(f"{a['unit']} {a['event'].replace('_', ' ')}" for a in r.get("attempts", []) if a["event"] != "assigned")
        rows.append(
            "<tr class='{cls}'><td>#{n}</td><td>{at}</td><td>{where}</td><td>{kind}</td><td>{det}</td><td>{o}</td><td>{a}</td>"
            "<td>{s}</td><td>{res}</td><td>{unit}</td><td>{best}</td><td>{tries}</td></tr>".format(
                cls="ok" if r["met"]["order"] and r["met"]["on_scene"] else "bad", n=r["n"], at=_mmss(r["at_s"]),
                where=e(r["camera"] or f"operator at {r['place']['lat']:.5f},{r['place']['lon']:.5f}"),
                kind=e(r["expected_kind"] + ("" if r.get("kind_as_expected", True) else f" (raised as {r.get('kind')})")),
                det=_fmt(r.get("detect_s")) if r["detected"] else "<b>not detected</b>", o=_fmt(st.get("order")),
                a=_fmt(st.get("ack")), s=_fmt(st.get("on_scene")), res=_fmt(st.get("resolved")), unit=e(r.get("unit") or "-"),
                best=e(best), tries=e(tries or "-"),
            )
        )
    def verdict_li(v: dict[str, Any]) -> str:
        got = "-" if v["fraction"] is None else f"{v['fraction']:.0%}"
        return f"<li class='{'ok' if v['pass'] else 'bad'}'>{e(v['target'])}: {got} {'PASS' if v['pass'] else 'FAIL'}</li>"

    verdicts = "".join(verdict_li(v) for v in report["verdicts"].values())
    checks = "".join(
        f"<li class='{'ok' if c.get('pass', True) else 'bad'}'>{e(name)}: {e(c.get('summary', json.dumps(c)))}</li>"
        for name, c in report.get("checks", {}).items()
    )
    t = report["totals"]
    pct = report["percentiles_s"]
    row_label = {"detect_real_s": "detection: start in the video to alert (real s)", "order": "alert to order",
                 "ack": "alert to acknowledgement", "on_scene": "alert to unit on scene", "resolved": "alert to cleared"}
    prow = "".join(
        f"<tr><td>{e(row_label.get(k, k))}</td><td>{_fmt(v.get('p50'))}</td><td>{_fmt(v.get('p90'))}</td><td>{_fmt(v.get('max'))}</td><td>{v.get('n')}</td></tr>"
        for k, v in pct.items()
    )
    imgs = "".join(f"<figure><img src='{p.name}' alt='{k}'></figure>" for k, p in paths.items() if p.suffix == ".png")
    extra = "".join(
        f"<tr><td>{e(x['camera'] or 'operator')}</td><td>{e(x['kind'])}</td><td>{_mmss(x['alert_s'] or 0)}</td><td>{e(x.get('why', 'false alert'))}</td></tr>"
        for x in report["related"] + [dict(f, why="false alert") for f in report["false_alerts"]]
    )
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>Drill {e(d['id'])}: {report['result']}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}}h1{{margin-bottom:.2em}}
.banner{{font-size:28px;font-weight:700;padding:.4em .8em;border-radius:6px;display:inline-block;color:#fff;background:{'#2e7d32' if ok else '#c62828'}}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ddd;padding:4px 8px;font-size:13px;text-align:left}}th{{background:#f5f5f5}}
tr.bad td:first-child{{border-left:4px solid #c62828}}tr.ok td:first-child{{border-left:4px solid #2e7d32}}li.bad{{color:#c62828}}li.ok{{color:#2e7d32}}
img{{max-width:100%;border:1px solid #eee}}figure{{margin:1em 0}}.note{{color:#666;font-size:12px}}</style></head><body>
<h1>Drill {e(d['scenario'])}</h1><div class="banner">{report['result']}</div>
<p>Drill id <code>{e(d['id'])}</code>, district {e(d['district'])}, {d['speed']:g}x real time, seed {d['seed']},
started {e(str(d.get('started')))}; {_mmss(d.get('sim_s') or 0)} simulated ({_mmss(d.get('wall_s') or 0)} wall).
{e(d.get('description') or '')}</p>
<h2>Targets</h2><ul>{verdicts}</ul>{f'<h2>Checks</h2><ul>{checks}</ul>' if checks else ''}
<h2>Totals</h2><p>{t['scripted']} scripted incidents ({t['camera_incidents']} in camera video): {t['detected']} detected,
{t['dispatched']} dispatched, {t['acknowledged']} acknowledged, {t['served']} served (unit on scene), {t['resolved']} resolved;
best choice in hindsight {t['best_choice']}. Detection recall {_fmt(t['detection_recall'], '')}; {t['false_alerts']} false alert(s)
over {t['camera_hours']:.3f} camera-hours ({_fmt(t['false_alerts_per_camera_hour'], 'per camera-hour')}).
{t['timeouts']} order(s) timed out, {t['declines']} declined, {t['escalations']} escalation(s).</p>
<table><tr><th>stage (simulated s unless said)</th><th>p50</th><th>p90</th><th>max</th><th>n</th></tr>{prow}</table>
<h2>Incidents</h2><table><tr><th>#</th><th>at</th><th>where</th><th>kind</th><th>detected after (real)</th><th>order</th>
<th>ack</th><th>on scene</th><th>cleared</th><th>unit</th><th>best choice</th><th>other attempts</th></tr>{''.join(rows)}</table>
{f'<h3>Other incidents of this drill</h3><table><tr><th>camera</th><th>kind</th><th>alert at</th><th>what</th></tr>{extra}</table>' if extra else ''}
{imgs}
<p class="note">{'<br>'.join(e(x) for x in report['notes'])}</p></body></html>"""
    path.write_text(body)
    return path
