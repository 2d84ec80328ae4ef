"""`patrollink` command line: engine, alert, units, incidents, tail, nats, check-config, run."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from contextlib import AsyncExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DEFAULT_DISTRICT = "config/districts/tieshan.yaml"
STATE_DIR = Path(os.environ.get("PATROLLINK_STATE", ".state"))
URL_FILE = "nats.url"


def _district_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--district", default=os.environ.get("PATROLLINK_DISTRICT", DEFAULT_DISTRICT), help="district YAML file")


def _nats_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nats",
        default=os.environ.get("PATROLLINK_NATS"),
        help="NATS URL or comma-separated cluster URLs (default: $PATROLLINK_NATS, else the embedded server)",
    )
    p.add_argument("--prefix", default=os.environ.get("PATROLLINK_PREFIX", ""), help="subject prefix (side-by-side deployments)")


def _load_district(path: str) -> Any:
    from dispatch.district import ConfigError, load_district

    try:
        return load_district(path)
    except ConfigError as e:
        print(f"patrollink: the district configuration has errors:\n{e}", file=sys.stderr)
        raise SystemExit(2) from None


def _client_urls(arg: str | None, prog: str = "patrollink", url_files: tuple[str, ...] = (URL_FILE,),
                 unknown: str = "no NATS server known. Start one with `patrollink run` or `patrollink nats`, "
                                "or pass --nats nats://HOST:4222 (or set PATROLLINK_NATS).") -> list[str]:
    """Where a client command should connect: --nats, $PATROLLINK_NATS, or the embedded server whose URL
    the first of `url_files` in the state folder names (`run`/`nats` write nats.url); else exit with `unknown`."""
    from dispatch.natsserver import resolve_nats_urls

    try:
        urls = resolve_nats_urls(arg)
    except ValueError as e:
        raise SystemExit(f"{prog}: {e}") from None
    if urls:
        return urls
    for name in url_files:
        f = STATE_DIR / name
        if f.exists():
            return [f.read_text().strip()]
    raise SystemExit(f"{prog}: {unknown}")


async def _embedded_or(urls_arg: str | None, stack: AsyncExitStack, state_dir: Path) -> list[str]:
    from dispatch.natsserver import EmbeddedNats, resolve_nats_urls

    try:
        urls = resolve_nats_urls(urls_arg)
    except ValueError as e:
        raise SystemExit(f"patrollink: {e}") from None
    if urls:
        return urls
    state_dir.mkdir(parents=True, exist_ok=True)
    server = EmbeddedNats(state_dir / "nats", name="patrollink")
    await server.astart()
    stack.push_async_callback(server.astop)
    (state_dir / URL_FILE).write_text(server.url)
    stack.callback(lambda: (state_dir / URL_FILE).unlink(missing_ok=True))
    print(f"nats-server (embedded, JetStream) at {server.url}, data in {state_dir / 'nats'}", flush=True)
    return [server.url]


def _parse_at(text: str, prog: str) -> tuple[float, float]:
    """--at LAT,LON -> (lat, lon), or exit saying what is wrong."""
    try:
        lat, lon = (float(x) for x in text.split(","))
    except ValueError:
        raise SystemExit(f"{prog}: --at wants LAT,LON, got {text!r}") from None
    return lat, lon


async def _until_signalled() -> None:
    """Wait for Ctrl-C or SIGTERM (the commands that run until stopped)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:  # pragma: no cover
            pass
    await stop.wait()


# --------------------------------------------------------------------------- commands


def cmd_check_config(a: argparse.Namespace) -> int:
    from dispatch.district import check_config

    bad = 0
    for f in a.files:
        issues = check_config(f)
        if issues:
            bad += 1
            for i in issues:
                print(str(i), file=sys.stderr)
            print(f"{f}: {len(issues)} problem(s)", file=sys.stderr)
        else:
            print(f"{f}: ok")
    return 1 if bad else 0


async def _start_engine(a: argparse.Namespace, urls: list[str], district: Any) -> Any:
    from dispatch.app import build_app

    app, rt = build_app(district, urls, prefix=a.prefix, name=a.name, replicas=a.replicas)
    await app.start()
    return app, rt


def cmd_engine(a: argparse.Namespace) -> int:
    from dispatch.logs import configure

    # a line per incident event: structlog renders straight to stderr, not through stdlib logging
    configure(level=a.log_level, direct=True)
    district = _load_district(a.district)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            urls = await _embedded_or(a.nats, stack, Path(a.state_dir))
            app, rt = await _start_engine(a, urls, district)
            stack.push_async_callback(app.stop)
            print(f"engine {a.name} serving district {district.name} on {', '.join(urls)}; Ctrl-C stops", flush=True)
            await _until_signalled()

    asyncio.run(main())
    return 0


def cmd_nats(a: argparse.Namespace) -> int:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            await _embedded_or(None, stack, Path(a.state_dir))
            await _until_signalled()

    asyncio.run(main())
    return 0


def cmd_alert(a: argparse.Namespace) -> int:
    import nats

    from dispatch.events import Alert, AlertSource, Area, CapCertainty, CapStatus, IncidentKind, encode, new_id
    from dispatch.subjects import Subjects

    area = None
    if a.at:
        lat, lon = _parse_at(a.at, "patrollink")
        area = Area(lat=lat, lon=lon, description=a.place or "")
    try:
        alert = Alert(
            event_id=new_id(),
            source=AlertSource.operator,
            kind=IncidentKind(a.kind),
            priority=a.priority,
            camera=a.camera,
            area=area,
            certainty=CapCertainty.Observed,
            console=a.console,
            operator=a.operator,
            note=a.note,
            exercise=a.exercise,
            status=CapStatus.Exercise if a.exercise else CapStatus.Actual,
        )
    except ValueError as e:
        raise SystemExit(f"patrollink: {e}") from None
    s = Subjects(a.prefix)

    async def main() -> int:
        nc = await nats.connect(_client_urls(a.nats), connect_timeout=5)
        try:
            events: asyncio.Queue[Any] = asyncio.Queue()
            sub = await nc.subscribe(s.all_incident_events, cb=events.put)
            ack = await nc.jetstream().publish(s.operator_alert(a.console), encode(alert), headers={"Nats-Msg-Id": alert.id})
            print(f"alert {alert.id} stored (stream {ack.stream}, seq {ack.seq})")
            deadline = asyncio.get_running_loop().time() + a.wait
            incident = None
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    m = await asyncio.wait_for(events.get(), left)
                except asyncio.TimeoutError:
                    break
                ev = json.loads(m.data)
                if incident is None and alert.id in ev.get("alert_ids", []):
                    incident = ev["incident_id"]
                if incident and ev.get("incident_id") == incident:
                    print(_event_line(ev))
                    if ev["event"] in ("assigned", "escalated"):
                        break
            await sub.unsubscribe()
            if incident is None:
                print("no incident event seen yet: is an engine running? (`patrollink engine`)", file=sys.stderr)
                return 1
            return 0
        finally:
            await nc.close()

    return asyncio.run(main())


async def _read_bucket(nc: Any, bucket: str, keys: str) -> list[dict[str, Any]]:
    """The records under the key filter `keys` (one kind: the state bucket holds units and incidents)."""
    js = nc.jetstream()
    try:
        kv = await js.key_value(bucket)
    except Exception:
        return []
    out = []
    watcher = await kv.watch(keys)
    async for e in watcher:
        if e is None:
            break
        if e.value:
            out.append(json.loads(e.value))
    await watcher.stop()
    return out


def _table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*(str(x) for x in r)) for r in rows]
    return "\n".join(lines)


def _age(ts: str | None) -> str:
    if not ts:
        return "-"
    secs = (datetime.now(timezone.utc) - datetime.fromisoformat(ts.replace("Z", "+00:00"))).total_seconds()
    return f"{secs:.0f}s" if secs < 120 else f"{secs / 60:.0f}m"


def cmd_units(a: argparse.Namespace) -> int:
    import nats

    from dispatch.subjects import Subjects

    async def main() -> None:
        nc = await nats.connect(_client_urls(a.nats), connect_timeout=5)
        s = Subjects(a.prefix)
        rows = await _read_bucket(nc, s.bucket_state, s.unit_keys)
        await nc.close()
        rows.sort(key=lambda r: r["id"])
        print(_table(
            [[r["id"], r.get("callsign", ""), r["kind"], r["mode"], r["state"], r.get("incident") or "-",
              f"{r['lat']:.5f},{r['lon']:.5f}" if r.get("lat") is not None else "-", _age(r.get("fix_time")),
              r.get("exercise") or "-"] for r in rows],
            ["unit", "callsign", "kind", "mode", "state", "incident", "position", "fix", "drill"],
        ))
        print(f"{len(rows)} units")

    asyncio.run(main())
    return 0


def cmd_incidents(a: argparse.Namespace) -> int:
    import nats

    from dispatch.subjects import Subjects

    async def main() -> None:
        nc = await nats.connect(_client_urls(a.nats), connect_timeout=5)
        s = Subjects(a.prefix)
        rows = await _read_bucket(nc, s.bucket_state, s.incident_keys)
        await nc.close()
        if not a.all:
            rows = [r for r in rows if r["state"] not in ("resolved", "cancelled")]
        rows.sort(key=lambda r: (r["priority"], r["opened_at"]))
        print(_table(
            [[r["id"][:12], f"P{r['priority']}", r["kind"], r["state"], r.get("unit") or "-", len(r.get("attempts", [])),
              r["place"].get("description") or f"{r['place']['lat']:.5f},{r['place']['lon']:.5f}", _age(r["opened_at"]),
              r.get("exercise") or "-"] for r in rows],
            ["incident", "pri", "kind", "state", "unit", "tries", "place", "age", "drill"],
        ))
        print(f"{len(rows)} incidents" + ("" if a.all else " open (--all shows closed ones too)"))

    asyncio.run(main())
    return 0


def _event_line(ev: dict[str, Any]) -> str:
    t = ev["time"][11:19]
    drill = f" [DRILL {ev['exercise']}]" if ev.get("exercise") else ""
    unit = f" unit={ev['unit']}" if ev.get("unit") else ""
    eta = f" eta={ev['eta_s']:.0f}s" if ev.get("eta_s") is not None else ""
    return f"{t} {ev['incident_id'][:12]} P{ev['priority']} {ev['kind']:<12} {ev['event']:<12}{unit}{eta}  {ev.get('detail', '')}{drill}"


def cmd_tail(a: argparse.Namespace) -> int:
    import nats
    from nats.js.api import DeliverPolicy

    from dispatch.subjects import Subjects

    s = Subjects(a.prefix)

    async def main() -> None:
        nc = await nats.connect(_client_urls(a.nats), connect_timeout=5)
        js = nc.jetstream()

        async def show(m: Any) -> None:
            try:
                print(_event_line(json.loads(m.data)), flush=True)
            except Exception:
                print(f"(unreadable event on {m.subject})", flush=True)

        policy = DeliverPolicy.ALL if a.all else DeliverPolicy.NEW
        await js.subscribe(s.all_incident_events, cb=show, ordered_consumer=True, deliver_policy=policy)
        print(f"following incident events on {s.all_incident_events} (Ctrl-C stops)", file=sys.stderr, flush=True)
        await _until_signalled()
        await nc.close()

    asyncio.run(main())
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from dispatch.logs import configure

    configure(level=a.log_level)
    district = _load_district(a.district)

    async def main() -> None:
        from simulators.drill import LiveDrill

        async with AsyncExitStack() as stack:
            urls = await _embedded_or(a.nats, stack, Path(a.state_dir))
            app, rt = await _start_engine(a, urls, district)
            stack.push_async_callback(app.stop)
            # a never-ending drill: synthetic cameras watched by the real camera adapter, every unit simulated
            live = LiveDrill(district, urls, prefix=a.prefix, seed=a.seed, cameras=a.cameras,
                             incident_every_s=a.alert_every, state_dir=Path(a.state_dir) / "live")
            print(f"starting the live drill: {len(live.rt.camera_ids)} synthetic cameras, {len(district.units)} simulated units ...",
                  flush=True)
            stack.push_async_callback(live.stop)
            await live.start()
            from adapters.console.server import start_for_run

            # the console shows the drill's district: its camera tiles play the synthetic streams
            console, made, users_file = await start_for_run(
                live.rt.district, urls, prefix=a.prefix, state_dir=Path(a.state_dir), port=a.console_port
            )
            stack.push_async_callback(console.stop)
            accounts = (
                f"  accounts:   demo passwords in {Path(a.state_dir) / 'console-demo-accounts.txt'}\n"
                if made or (Path(a.state_dir) / "console-demo-accounts.txt").exists()
                else f"  accounts:   {users_file} (add with: patrollink console adduser NAME --role operator)\n"
            )
            first = live.rt.camera_ids[0] if live.rt.camera_ids else None
            inject = (f".venv/bin/patrollink drill inject --camera {first} --kind intrusion"
                      if first else ".venv/bin/patrollink drill inject --at LAT,LON --kind theft")
            print(
                "\nPatrolLink is running on district "
                f"{district.name}, as a live drill (exercise `{live.exercise}`): {len(district.units)} simulated units, "
                f"{len(live.rt.camera_ids)} synthetic cameras watched by the camera adapter, "
                f"a drill incident about every {a.alert_every:.0f} s.\n"
                f"  console:    {console.url}/console   (operators)\n"
                f"  terminal:   {console.url}/terminal  (patrol units, phone-sized)\n"
                f"{accounts}"
                f"  NATS:       {', '.join(urls)}\n"
                f"  follow it:  .venv/bin/patrollink tail\n"
                f"  tables:     .venv/bin/patrollink incidents   |   .venv/bin/patrollink units\n"
                f"  inject one: {inject}   (trainer: an incident in the video)\n"
                f"  raise one:  .venv/bin/patrollink alert --camera {district.cameras[0].id if district.cameras else 'CAM'} "
                f"--kind fight --priority 1 --exercise {live.exercise}   (operator)\n"
                "Ctrl-C stops everything.\n",
                flush=True,
            )
            await _until_signalled()
            print("stopping ...", flush=True)

    asyncio.run(main())
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="patrollink", description="PatrolLink: camera room to patrol units, over NATS")
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("check-config", help="validate district files; prints file:line: field: reason")
    c.add_argument("files", nargs="+")
    c.set_defaults(func=cmd_check_config)

    for name, func, helptext in (
        ("engine", cmd_engine, "run the routing engine"),
        ("run", cmd_run, "the whole system on embedded defaults as a live drill: NATS, engine, synthetic cameras, camera adapter, simulated units, console"),
    ):
        e = sub.add_parser(name, help=helptext)
        _district_arg(e)
        _nats_arg(e)
        e.add_argument("--name", default="engine", help="replica name (logs, dead letters)")
        e.add_argument("--replicas", type=int, default=1, help="JetStream replicas for streams/buckets (3 on a cluster)")
        e.add_argument("--state-dir", default=str(STATE_DIR), help="embedded server data folder")
        e.add_argument("--log-level", default="info")
        if name == "run":
            e.add_argument("--seed", type=int, default=1)
            e.add_argument("--alert-every", type=float, default=180.0, help="mean seconds between drill incidents")
            e.add_argument("--cameras", type=int, default=None,
                           help="how many of the district's cameras get a synthetic video (default: all)")
            e.add_argument("--console-port", type=int, default=8080, help="web console port on 127.0.0.1 (0: any free port)")
        e.set_defaults(func=func)

    n = sub.add_parser("nats", help="run the embedded nats-server alone")
    n.add_argument("--state-dir", default=str(STATE_DIR))
    n.set_defaults(func=cmd_nats)

    al = sub.add_parser("alert", help="raise an operator alert by hand")
    _nats_arg(al)
    where = al.add_mutually_exclusive_group(required=True)
    where.add_argument("--camera", help="place it at this camera")
    where.add_argument("--at", help="LAT,LON")
    al.add_argument("--place", default="", help="place description for --at")
    al.add_argument("--kind", required=True, help="assault, fight, intrusion, theft, loitering, crowd, medical, ...")
    al.add_argument("--priority", type=int, default=2, choices=(1, 2, 3))
    al.add_argument("--note", default="")
    al.add_argument("--console", default="cli")
    al.add_argument("--operator", default=os.environ.get("USER", "operator"))
    al.add_argument("--exercise", default=None, help="drill id (makes it drill traffic)")
    al.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the engine's decision")
    al.set_defaults(func=cmd_alert)

    for name, func in (("units", cmd_units), ("incidents", cmd_incidents)):
        t = sub.add_parser(name, help=f"table of current {name}")
        _nats_arg(t)
        if name == "incidents":
            t.add_argument("--all", action="store_true", help="include closed incidents")
        t.set_defaults(func=func)

    tl = sub.add_parser("tail", help="follow incident events live")
    _nats_arg(tl)
    tl.add_argument("--all", action="store_true", help="from the start of the stream")
    tl.set_defaults(func=cmd_tail)

    # the edges add their own commands (`patrollink camera ...`, `patrollink console`)
    for module in ("adapters.camera.cli", "adapters.console.cli", "simulators.cli"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        mod.register(sub)

    a = p.parse_args(argv)
    try:
        return int(a.func(a) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
