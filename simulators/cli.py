"""`patrollink drill ...`: run a scripted training drill and score it; add an incident to a running drill.

    patrollink drill SCENARIO [--speed N] [--seed S] [--out DIR] [--nats URLS] [--prefix P] [--engine own|running] [--check]
    patrollink drill inject (--camera ID | --at LAT,LON) --kind KIND [--priority P] [--seconds S] [--drill ID] [--nats URLS]
    patrollink drill live [--district FILE] [--cameras N] [--every S] [--seed S] --nats URLS

dispatch/cli.py calls `register(sub)` when this module exists.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

USAGE = """\
patrollink drill SCENARIO [--speed N] [--seed S] [--out DIR] [--nats URLS] [--prefix P] [--engine own|running] [--check]
       patrollink drill inject (--camera ID | --at LAT,LON) --kind KIND [--priority P] [--seconds S] [--drill ID] [--nats URLS]
       patrollink drill live [--district FILE] [--cameras N] [--every S] [--seed S] --nats URLS"""

DESCRIPTION = """\
Run a training drill: the real system (NATS, the routing engine, the camera
adapter watching synthetic camera video) with simulated patrol units, playing
the scenario's timeline of incidents and failures, then score it. Progress goes
to stderr; the report (report.json, report.html, PNG plots) to --out DIR
(default var/drills/<drill id>). Exit status 0 = PASS, 1 = FAIL, 2 = could not run.

Without --nats the drill starts its own embedded nats-server. With --nats it
runs its own engine under its own subject prefix (default drill-<id>), unless
--engine running: then it uses the engine already running there, at real time
(--speed 1), and only the exercise id keeps drill and real traffic apart.

  inject    add an incident to a running drill (this one, `patrollink run`'s live drill,
            or the one named by --drill): --camera ID --kind intrusion|loitering|fight|crowd|camera_covered
            plays it in that camera's video; --at LAT,LON --kind KIND is an operator's report there.
  live      a never-ending drill (exercise `live`) on the engine already running on --nats, until
            Ctrl-C: synthetic cameras watched by the camera adapter, every unit simulated, an
            incident about every --every seconds. `patrollink run` does this on its embedded server.

Scenario format and time scaling: docs/drills.md.
"""


def register(sub: Any) -> None:
    p = sub.add_parser("drill", help="run a training drill from a scenario and score it; `drill inject` adds an incident",
                       usage=USAGE, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", metavar="SCENARIO | inject | live",
                   help="scenario YAML (config/scenarios/*.yaml), `inject` or `live`")
    p.add_argument("--speed", type=float, default=None, help="simulated seconds per wall second (default: the scenario's)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's); same seed, same drill")
    p.add_argument("--out", default=None, help="report folder (default var/drills/<drill id>)")
    p.add_argument("--nats", default=os.environ.get("PATROLLINK_NATS"),
                   help="NATS URL(s), comma-separated (default: $PATROLLINK_NATS, else an embedded server)")
    p.add_argument("--prefix", default=None, help="subject prefix (default: none on the embedded server, drill-<id> on a shared one)")
    p.add_argument("--engine", choices=("own", "running"), default="own",
                   help="own: start an engine for the drill (default); running: use the one on --nats (speed 1)")
    p.add_argument("--drill-id", default=None, help="drill id (exercise id) instead of <scenario>-s<seed>-<time>")
    p.add_argument("--check", action="store_true", help="only validate the scenario (and its district)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.add_argument("--keep-state", action="store_true", help="keep the drill's temporary NATS and camera state")
    p.add_argument("--log-level", default="warning", help="log level of the engine, camera adapter ... (default warning)")
    g = p.add_argument_group("inject")
    g.add_argument("--camera", help="inject: play the incident in this camera's video")
    g.add_argument("--at", help="inject: LAT,LON of an operator's report")
    g.add_argument("--kind", help="inject: intrusion, loitering, fight, crowd, camera_covered (camera); any incident kind (--at)")
    g.add_argument("--priority", type=int, choices=(1, 2, 3), help="inject --at: priority (camera incidents take the camera rule's)")
    g.add_argument("--seconds", type=float, help="inject --camera: how long it lasts (loitering, fight, crowd, camera_covered)")
    g.add_argument("--drill", help="inject: the drill id (default: whichever drill runs)")
    g.add_argument("--wait", type=float, default=5.0, help="inject: seconds to wait for the drill's answer")
    lv = p.add_argument_group("live")
    lv.add_argument("--district", default="config/districts/tieshan.yaml", help="live: the district file")
    lv.add_argument("--cameras", type=int, default=None, help="live: how many of its cameras get a synthetic video (default: all)")
    lv.add_argument("--every", type=float, default=180.0, help="live: mean seconds between drill incidents")
    p.set_defaults(func=cmd_drill)


def cmd_drill(a: argparse.Namespace) -> int:
    if a.scenario == "inject":
        return cmd_inject(a)
    if a.scenario == "live":
        return cmd_live(a)
    from dispatch.district import ConfigError
    from simulators.scenario import load_scenario

    try:
        scenario = load_scenario(a.scenario)
    except ConfigError as e:
        for i in e.issues:
            print(str(i), file=sys.stderr)
        print(f"patrollink drill: {a.scenario}: {len(e.issues)} problem(s); nothing was started", file=sys.stderr)
        return 2
    if a.check:
        print(f"{a.scenario}: ok ({len(scenario.incidents)} incident(s), {len(scenario.failures)} failure(s), "
              f"{len(scenario.drilled_cameras)} camera(s), {len(scenario.simulated_units)} simulated unit(s))")
        return 0
    from dispatch.logs import configure
    from dispatch.natsserver import resolve_nats_urls
    from simulators.drill import Drill

    configure(level=a.log_level)
    try:
        urls = resolve_nats_urls(a.nats)
        drill = Drill(scenario, speed=a.speed, seed=a.seed, out_dir=a.out, nats_urls=urls, prefix=a.prefix,
                      engine=a.engine, drill_id=a.drill_id, progress=not a.no_progress, keep_state=a.keep_state)
    except ValueError as e:
        print(f"patrollink drill: {e}", file=sys.stderr)
        return 2

    async def main() -> dict[str, Any]:
        task = asyncio.create_task(drill.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, task.cancel)
            except NotImplementedError:  # pragma: no cover
                pass
        return await task

    try:
        report = asyncio.run(main())
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("patrollink drill: interrupted before it started", file=sys.stderr)
        return 2
    except Exception as e:
        print(f"patrollink drill: could not run: {e}", file=sys.stderr)
        return 2
    from simulators.drill import summary_text

    print(summary_text(report, drill.paths), flush=True)
    return 0 if report["result"] == "PASS" else 1


def cmd_live(a: argparse.Namespace) -> int:
    from dispatch.cli import _until_signalled
    from dispatch.district import ConfigError, load_district
    from dispatch.logs import configure
    from dispatch.natsserver import resolve_nats_urls
    from simulators.drill import LiveDrill

    try:
        urls = resolve_nats_urls(a.nats)
    except ValueError as e:
        raise SystemExit(f"patrollink drill live: {e}") from None
    if not urls:
        raise SystemExit("patrollink drill live: give --nats URL of the server the engine runs on "
                         "(or use `patrollink run`, which starts everything)")
    try:
        district = load_district(a.district)
    except ConfigError as e:
        for i in e.issues:
            print(str(i), file=sys.stderr)
        return 2
    configure(level=a.log_level)

    async def main() -> None:
        live = LiveDrill(district, urls, prefix=a.prefix or "", seed=1 if a.seed is None else a.seed,
                         cameras=a.cameras, incident_every_s=a.every)
        try:
            await live.start()
            print(f"live drill `{live.exercise}` on {', '.join(urls)}: {len(live.rt.camera_ids)} synthetic cameras, "
                  f"{len(district.units)} simulated units, an incident about every {a.every:.0f} s; "
                  "`patrollink drill inject ...` adds one; Ctrl-C stops", flush=True)
            await _until_signalled()
        finally:
            await live.stop()

    asyncio.run(main())
    return 0


def cmd_inject(a: argparse.Namespace) -> int:
    import nats
    from pydantic import ValidationError

    from dispatch.cli import _client_urls, _parse_at
    from dispatch.events import DrillInject, DrillInjectResult, Point, describe_error, encode
    from dispatch.subjects import Subjects

    if not a.kind:
        raise SystemExit("patrollink drill inject: --kind is required")
    if bool(a.camera) == bool(a.at):
        raise SystemExit("patrollink drill inject: give --camera ID (in its video) or --at LAT,LON (an operator's report)")
    try:
        at = None
        if a.at:
            lat, lon = _parse_at(a.at, "patrollink drill inject")
            at = Point(lat=lat, lon=lon)
        req = DrillInject(kind=a.kind, drill=a.drill, camera=a.camera, at=at, priority=a.priority, seconds=a.seconds)
    except ValidationError as e:
        raise SystemExit(f"patrollink drill inject: {describe_error(e)}") from None
    # a scripted drill's embedded server (drill.url), then `patrollink run`'s (nats.url)
    urls = _client_urls(a.nats, "patrollink drill inject", ("drill.url", "nats.url"),
                        "no running drill known: give --nats URL (or start `patrollink run` or `patrollink drill SCENARIO`)")

    async def main() -> int:
        nc = await nats.connect(urls, connect_timeout=5)
        try:
            m = await nc.request(Subjects(a.prefix or "").drill_inject(a.drill), encode(req), timeout=a.wait)
        except Exception:
            print(f"patrollink drill inject: no drill answered on {', '.join(urls)}"
                  + (f" (drill {a.drill})" if a.drill else "") + f" within {a.wait:g} s", file=sys.stderr)
            return 1
        finally:
            await nc.close()
        r = DrillInjectResult.model_validate_json(m.data)
        if not r.ok:
            print(f"patrollink drill inject: drill {r.drill}: {r.error}", file=sys.stderr)
            return 1
        where = f"in camera {r.camera}'s video" if r.camera else "reported by an operator"
        print(f"drill {r.drill}: incident #{r.n} ({r.kind}, expected alert {r.expected_kind}, "
              f"priority {r.priority}) {where} at t={r.at_s or 0:.0f} s")
        return 0

    return asyncio.run(main())
