"""Drill scenarios: one YAML file per exercise, validated before anything starts.

    from simulators.scenario import load_scenario, ScenarioError
    sc = load_scenario("config/scenarios/quiet-night.yaml")     # raises ScenarioError
    sc.district                  # the loaded dispatch.district.District
    sc.incidents[0].at           # simulated seconds after the drill's start

Every problem is reported at once, each naming the file, the line and the field,
like the district config (`patrollink check-config`):

    config/scenarios/bad.yaml:14: incidents[1].camera: unknown camera 'cam99' (district Tieshan has cam01 ... cam16); did you mean 'cam09'?
    config/scenarios/bad.yaml:19: incidents[2].at: input should be greater than or equal to 0 (got -5)
    config/scenarios/bad.yaml:27: failures[0].radio_silent: unit 'p99' is not in district Tieshan

The format is documented in docs/drills.md.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from dispatch.district import (
    ConfigError,
    ConfigIssue,
    District,
    Rules,
    config_items,
    config_reason,
    dedupe_issues,
    load_district,
    read_yaml,
)
from dispatch.events import IncidentKind, Point
from dispatch.subjects import check_token
from simulators.units import Behaviour, Delay

__all__ = [
    "CAMERA_KINDS",
    "RULE_OF_KIND",
    "CameraIncident",
    "Scenario",
    "ScenarioError",
    "check_scenario",
    "load_scenario",
]

CAMERA_KINDS: dict[str, str] = {
    "intrusion": "intrusion",
    "loitering": "loitering",
    "fight": "fight",
    "scuffle": "fight",
    "crowd": "crowd",
    "camera_covered": "camera_covered",
    "cover": "camera_covered",
}
"""Kinds a camera incident may have (scenario word -> what simulators.scene.Scene.add_incident scripts)."""

INCIDENT_KIND_OF: dict[str, str] = {
    "intrusion": "intrusion", "loitering": "loitering", "fight": "fight", "crowd": "crowd", "camera_covered": "camera_tamper",
}
"""Scripted kind -> the IncidentKind the camera adapter's alert carries."""

RULE_OF_KIND: dict[str, str] = {
    "intrusion": "intrusion", "loitering": "loitering", "fight": "running", "crowd": "crowd", "camera_covered": "tamper",
}
"""Scripted kind -> the camera rule that raises it (whose priority the alert gets)."""


class ScenarioError(ConfigError):
    """The scenario cannot be run; `issues` lists every problem found (file, line, field, reason)."""


# --------------------------------------------------------------------------- models


class _M(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _delay(v: Any) -> Any:
    """5 -> fixed; [lo, hi] -> uniform; {median, p90} -> log-normal."""
    if isinstance(v, Delay):
        return v
    if isinstance(v, bool):
        raise ValueError("a delay is seconds (5), a range [lo, hi] or {median: s, p90: s}")
    if isinstance(v, (int, float)):
        if not (v >= 0 and math.isfinite(v)):
            raise ValueError(f"a delay must be 0 or more seconds, got {v}")
        return Delay.fixed(v)
    if isinstance(v, (list, tuple)):
        if len(v) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise ValueError("a range is [lo, hi] in seconds")
        lo, hi = float(v[0]), float(v[1])
        if lo < 0 or hi < lo:
            raise ValueError(f"range [{lo:g}, {hi:g}] must have 0 <= lo <= hi")
        return Delay.uniform(lo, hi)
    if isinstance(v, Mapping):
        extra = set(v) - {"median", "p90"}
        if extra or "median" not in v:
            raise ValueError("a log-normal delay is {median: s, p90: s}" + (f"; unknown key {sorted(extra)[0]!r}" if extra else ""))
        med = v["median"]
        p90 = v.get("p90", med)
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (med, p90)):
            raise ValueError("median and p90 are seconds")
        if not (med > 0 and p90 >= med):
            raise ValueError(f"needs median > 0 and p90 >= median, got median {med}, p90 {p90}")
        return Delay.lognormal(float(med), float(p90))
    raise ValueError("a delay is seconds (5), a range [lo, hi] or {median: s, p90: s}")


DelayIn = Annotated[Delay, BeforeValidator(_delay)]


def _point_or_community(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ValueError(f"a place is [lat, lon], {{lat: .., lon: ..}} or a community id, got {len(v)} numbers")
        return {"lat": v[0], "lon": v[1]}
    return v


_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def _clock(v: str | None) -> str | None:
    if v is not None and not _HHMM.match(v):
        raise ValueError(f"{v!r} is not a local time HH:MM (e.g. '23:30')")
    return v


class UnitsSpec(_M):
    """Which units are simulated, and how they behave (times in simulated seconds)."""

    simulated: Literal["all", "none"] | tuple[str, ...] = Field("all", description="'all', 'none' or a list of unit ids")
    real: tuple[str, ...] = Field((), description="units played by real people on patrol terminals (not simulated)")
    position_interval_s: float = Field(10.0, gt=0, le=600, description="seconds between position reports")
    answer_delay_s: DelayIn = Field(Delay.lognormal(6.0, 15.0), description="time to answer an order")
    decline_p: float = Field(0.05, ge=0, le=1, description="probability an order is declined")
    silent_p: float = Field(0.02, ge=0, le=1, description="probability an order is never answered (radio dead spot)")
    on_scene_s: DelayIn = Field(Delay.uniform(120.0, 300.0), description="time spent on scene")
    patrol_dwell_s: DelayIn = Field(Delay.uniform(60.0, 300.0), description="time at each post of the beat")
    patrol_speed: float = Field(0.6, gt=0, le=1, description="fraction of the mode's speed while walking the beat")

    @model_validator(mode="after")
    def _probabilities(self) -> "UnitsSpec":
        if self.decline_p + self.silent_p > 1:
            raise ValueError(f"decline_p + silent_p is {self.decline_p + self.silent_p:g}, more than 1")
        return self

    def behaviour(self) -> Behaviour:
        return Behaviour(
            position_interval_s=self.position_interval_s, answer_delay=self.answer_delay_s, decline_p=self.decline_p,
            silent_p=self.silent_p, on_scene=self.on_scene_s, patrol_dwell=self.patrol_dwell_s, patrol_speed=self.patrol_speed,
        )


class CamerasSpec(_M):
    """The synthetic cameras: every camera named by an incident or failure, plus `watch`."""

    fps: float = Field(10.0, ge=2, le=30, description="frames per second each synthetic camera serves")
    night: bool = Field(False, description="render night scenes (darker; detection is slower)")
    watch: tuple[str, ...] = Field((), description="more cameras to serve and watch, with no scripted incident")
    rules: dict[str, Any] = Field(
        default_factory=dict,
        description="camera rules merged over every drilled camera's own (district `cameras[].rules` format)",
    )


class IncidentSpec(_M):
    """One scripted incident: at a camera (rendered into its video) or at a place (an operator's report)."""

    at: float = Field(..., ge=0, description="simulated seconds after the start of the drill")
    camera: str | None = Field(None, description="camera id: the incident is played in this camera's video")
    place: Annotated[Point | str | None, BeforeValidator(_point_or_community)] = Field(
        None, description="[lat, lon] or a community id: an operator reports it there (no video)"
    )
    kind: str = Field(..., description="camera: intrusion, loitering, fight, crowd, camera_covered; place: any incident kind")
    priority: int | None = Field(None, ge=1, le=3, description="default: the camera rule's, or the district policy's")
    seconds: float | None = Field(None, gt=0, le=600, description="how long it lasts (loitering, fight, crowd, camera_covered), real seconds of video")
    description: str = Field("", max_length=200, description="for the report")

    @model_validator(mode="after")
    def _where(self) -> "IncidentSpec":
        if (self.camera is None) == (self.place is None):
            raise ValueError("give exactly one of camera (played in its video) or place (reported by an operator)")
        return self

    @property
    def scripted_kind(self) -> str:
        """Camera incidents: what the scene scripts (intrusion, loitering, fight, crowd, camera_covered)."""
        return CAMERA_KINDS.get(self.kind, self.kind)

    @property
    def incident_kind(self) -> IncidentKind:
        """The incident kind the alert should carry."""
        if self.camera is not None:
            return IncidentKind(INCIDENT_KIND_OF[self.scripted_kind])
        return IncidentKind("fight" if self.kind == "scuffle" else self.kind)


CameraIncident = IncidentSpec


class FailureSpec(_M):
    """One failure injection: exactly one of camera_dies, radio_silent, nats_restart."""

    at: float = Field(..., ge=0, description="simulated seconds after the start of the drill")
    camera_dies: str | None = Field(None, description="camera id whose stream stops sending")
    radio_silent: str | None = Field(None, description="unit id whose radio goes silent (no positions, replies, orders)")
    nats_restart: bool = Field(False, description="the NATS server is stopped and started again (embedded server only)")
    seconds: float | None = Field(None, gt=0, description="how long it lasts (simulated seconds); absent: to the end")

    @model_validator(mode="after")
    def _one(self) -> "FailureSpec":
        n = sum([self.camera_dies is not None, self.radio_silent is not None, bool(self.nats_restart)])
        if n != 1:
            raise ValueError("give exactly one of camera_dies: CAMERA, radio_silent: UNIT or nats_restart: true")
        if self.nats_restart and self.seconds is not None:
            raise ValueError("nats_restart takes no seconds (the server comes back as soon as it can)")
        return self

    @property
    def what(self) -> str:
        if self.camera_dies is not None:
            return f"camera {self.camera_dies} stream dies"
        if self.radio_silent is not None:
            return f"unit {self.radio_silent} radio silent"
        return "NATS server restarts"


class Targets(_M):
    """Pass/fail, measured from the alert (the moment the system knew), in simulated seconds."""

    order_within_s: float = Field(60.0, gt=0, description="an order must go out this soon after the alert ...")
    order_fraction: float = Field(0.9, gt=0, le=1, description="... for at least this fraction of the incidents")
    on_scene_within_s: float = Field(300.0, gt=0, description="a unit must be on scene this soon after the alert ...")
    on_scene_fraction: float = Field(0.9, gt=0, le=1, description="... for at least this fraction of the incidents")
    detect_within_s: float | None = Field(None, gt=0, description="optional: camera alert this soon after the incident began (real seconds)")
    recall: float = Field(1.0, ge=0, le=1, description="fraction of scripted camera incidents the cameras must detect")


class Scenario(_M):
    name: Annotated[str, AfterValidator(lambda v: check_token(v, "scenario name"))] = Field(
        ..., description="letters, digits, '_' or '-'; the drill id starts with it"
    )
    description: str = Field("", max_length=2000)
    district: str = Field(..., min_length=1, description="district YAML; relative to this file")
    speed: float = Field(10.0, gt=0, le=100, description="simulated seconds per wall second")
    seed: int = Field(1, description="same seed, same drill")
    clock_start: Annotated[str | None, AfterValidator(_clock)] = Field(None, description="local time at t = 0, HH:MM (for the report)")
    duration_s: float | None = Field(None, gt=0, description="simulated seconds at most (default: last event + 30 minutes)")
    units: UnitsSpec = Field(default_factory=UnitsSpec)
    cameras: CamerasSpec = Field(default_factory=CamerasSpec)
    incidents: tuple[IncidentSpec, ...] = Field((), description="the timeline")
    failures: tuple[FailureSpec, ...] = Field((), description="failure injections")
    targets: Targets = Field(default_factory=Targets)

    _source: Path | None = PrivateAttr(None)
    _district: District | None = PrivateAttr(None)

    # -- what the runner needs
    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def district_obj(self) -> District:
        if self._district is None:
            raise RuntimeError("scenario not loaded with load_scenario()")
        return self._district

    @property
    def drilled_cameras(self) -> list[str]:
        """Cameras served and watched: named by an incident, a failure, or `cameras.watch`."""
        out = [i.camera for i in self.incidents if i.camera] + [f.camera_dies for f in self.failures if f.camera_dies]
        out += list(self.cameras.watch)
        return list(dict.fromkeys(c for c in out if c))

    @property
    def simulated_units(self) -> list[str]:
        d = self.district_obj
        if self.units.simulated == "none":
            return []
        ids = [u.id for u in d.units] if self.units.simulated == "all" else list(self.units.simulated)
        return [u for u in ids if u not in set(self.units.real)]

    @property
    def last_event_s(self) -> float:
        return max([i.at for i in self.incidents] + [f.at for f in self.failures] + [0.0])

    @property
    def max_duration_s(self) -> float:
        return self.duration_s if self.duration_s is not None else self.last_event_s + 1800.0


# --------------------------------------------------------------------------- YAML with line numbers

Loc = tuple[Any, ...]


_UNION_TAGS = {"Point", "str", "literal['all','none']", "tuple[str, ...]", "Delay", "float", "int", "none"}


def _clean_loc(loc: Loc) -> Loc:
    """Drop pydantic's union-member and validator tags from a location."""
    out = []
    for p in loc:
        if isinstance(p, str) and (p.startswith("function-") or p in _UNION_TAGS or p.startswith("literal[") or p.startswith("tuple[")):
            continue
        out.append(p)
    return tuple(out)


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


# --------------------------------------------------------------------------- load / check


def load_scenario(path: str | Path) -> Scenario:
    """Read, parse and validate a scenario (and its district); raise ScenarioError listing every problem."""
    path = Path(path)
    fname = str(path)
    issues: list[ConfigIssue] = []

    def issue(line: int | None, field: str, reason: str) -> None:
        issues.append(ConfigIssue(fname, line, field, reason))

    data, doc, dups = read_yaml(path, ScenarioError, "a scenario needs at least name and district")
    where = doc.locate
    for loc, line, reason in dups:
        issue(line, where(loc)[0], reason)

    scenario: Scenario | None = None
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc = _clean_loc(tuple(err["loc"]))
            field, line = where(loc)
            issue(line, field, config_reason({**err, "loc": loc}, Scenario))

    # the district, then everything the scenario says about it (on the raw data: runs even when other parts failed)
    district: District | None = None
    raw_district = data.get("district")
    if isinstance(raw_district, str) and raw_district.strip():
        dpath = Path(raw_district).expanduser()
        if not dpath.is_absolute():
            dpath = path.parent / dpath
        field, line = where(("district",))
        try:
            district = load_district(dpath)
        except ConfigError as e:
            if len(e.issues) == 1 and e.issues[0].line is None:
                issue(line, field, f"district file {dpath}: {e.issues[0].reason}")
            else:
                issue(line, field, f"district file {dpath} has {len(e.issues)} problem(s), listed below")
                issues.extend(e.issues)
    if district is not None:
        for loc, reason in _cross_issues(data, district):
            field, line = where(loc)
            issue(line, field, reason)

    if issues:
        uniq = dedupe_issues(issues)
        own = sorted((i for i in uniq if i.file == fname), key=lambda i: (i.line is None, i.line or 0))
        raise ScenarioError(own + [i for i in uniq if i.file != fname])
    assert scenario is not None and district is not None
    scenario._source = path.resolve()
    scenario._district = district
    return scenario


def check_scenario(path: str | Path) -> list[ConfigIssue]:
    """Every problem in a scenario file (and its district); [] when it is fine."""
    try:
        load_scenario(path)
    except ConfigError as e:
        return e.issues
    return []


def _cross_issues(data: Mapping[str, Any], d: District) -> list[tuple[Loc, str]]:
    """References to the district: cameras, units, places; kinds; priorities; camera rules; times."""
    out: list[tuple[Loc, str]] = []
    cams = [c.id for c in d.cameras]
    units = [u.id for u in d.units]
    cam_list = f"district {d.name} has {cams[0]} ... {cams[-1]}" if len(cams) > 3 else f"district {d.name} has {', '.join(cams) or 'no cameras'}"

    def camera_ref(loc: Loc, cid: Any) -> None:
        if isinstance(cid, str) and d.camera(cid) is None:
            out.append((loc, f"unknown camera {cid!r} ({cam_list}){_suggest(cid, cams)}"))

    def unit_ref(loc: Loc, uid: Any) -> None:
        if isinstance(uid, str) and d.unit(uid) is None:
            out.append((loc, f"unit {uid!r} is not in district {d.name}{_suggest(uid, units)}"))

    kinds = [k.value for k in IncidentKind]
    rule_prio: dict[tuple[str, str], tuple[int, int]] = {}
    last = 0.0
    for i, inc in config_items(data, "incidents"):
        at = inc.get("at")
        if isinstance(at, (int, float)) and not isinstance(at, bool):
            last = max(last, float(at))
        kind = inc.get("kind")
        if "camera" in inc and inc.get("camera") is not None:
            camera_ref(("incidents", i, "camera"), inc["camera"])
            if isinstance(kind, str) and kind not in CAMERA_KINDS:
                out.append((("incidents", i, "kind"),
                            f"a camera cannot play {kind!r}; camera incidents are {', '.join(sorted(set(CAMERA_KINDS)))}"
                            + (" (report it at a place instead)" if kind in kinds else _suggest(kind, list(CAMERA_KINDS)))))
            prio = inc.get("priority")
            if isinstance(kind, str) and kind in CAMERA_KINDS and isinstance(prio, int) and isinstance(inc.get("camera"), str):
                key = (inc["camera"], RULE_OF_KIND[CAMERA_KINDS[kind]])
                if key in rule_prio and rule_prio[key][0] != prio:
                    out.append((("incidents", i, "priority"),
                                f"camera {key[0]} raises {CAMERA_KINDS[kind]} alerts at one priority (its rule {key[1]!r}); "
                                f"incidents[{rule_prio[key][1]}] already asks for {rule_prio[key][0]}"))
                else:
                    rule_prio.setdefault(key, (prio, i))
        elif "place" in inc and inc.get("place") is not None:
            place = inc["place"]
            if isinstance(kind, str) and kind not in kinds and kind != "scuffle":
                out.append((("incidents", i, "kind"), f"unknown incident kind {kind!r}{_suggest(kind, kinds)}"))
            if isinstance(place, str):
                if d.community(place) is None:
                    comms = [c.id for c in d.communities]
                    out.append((("incidents", i, "place"), f"{place!r} is neither [lat, lon] nor a community of district {d.name}{_suggest(place, comms)}"))
            else:
                try:
                    p = Point.model_validate(_point_or_community(place))
                except (ValidationError, ValueError):
                    p = None  # reported by the model
                if p is not None and not d.contains(p.lat, p.lon):
                    out.append((("incidents", i, "place"), f"({p.lat:.6f}, {p.lon:.6f}) is outside district {d.name}"))
    for i, f in config_items(data, "failures"):
        at = f.get("at")
        if isinstance(at, (int, float)) and not isinstance(at, bool):
            last = max(last, float(at))
        camera_ref(("failures", i, "camera_dies"), f.get("camera_dies"))
        unit_ref(("failures", i, "radio_silent"), f.get("radio_silent"))
    raw_units = data.get("units")
    if isinstance(raw_units, Mapping):
        sim = raw_units.get("simulated")
        if isinstance(sim, list):
            for j, uid in enumerate(sim):
                unit_ref(("units", "simulated", j), uid)
        real = raw_units.get("real")
        if isinstance(real, list):
            for j, uid in enumerate(real):
                unit_ref(("units", "real", j), uid)
                if isinstance(sim, list) and uid in sim:
                    out.append((("units", "real", j), f"unit {uid!r} is listed as simulated and as real; choose one"))
    raw_cams = data.get("cameras")
    if isinstance(raw_cams, Mapping):
        watch = raw_cams.get("watch")
        if isinstance(watch, list):
            for j, cid in enumerate(watch):
                camera_ref(("cameras", "watch", j), cid)
        rules = raw_cams.get("rules")
        if isinstance(rules, Mapping) and rules and d.cameras:
            base = d.cameras[0].rules.model_dump()
            try:
                Rules.model_validate(_deep_merge(base, rules))
            except ValidationError as e:
                for err in e.errors():
                    out.append((("cameras", "rules", *err["loc"]), config_reason(err, Rules)))
    dur = data.get("duration_s")
    if isinstance(dur, (int, float)) and not isinstance(dur, bool) and dur < last:
        out.append((("duration_s",), f"the drill would end at {dur:g} s, before its last scripted event at {last:g} s"))
    return out


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def merged_rules(camera: Any, overrides: Mapping[str, Any], priorities: Mapping[str, int] | None = None) -> Rules:
    """A camera's rules with the scenario's overrides (and per-rule priorities) merged in."""
    data = _deep_merge(camera.rules.model_dump(), overrides)
    for rule, prio in (priorities or {}).items():
        data[rule] = {**data[rule], "priority": prio}
    return Rules.model_validate(data)
