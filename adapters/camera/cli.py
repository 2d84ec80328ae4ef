"""`patrollink camera ...`: watch cameras, replay a recording, show feedback statistics.

    patrollink camera [--district F] [--nats URLS] [--prefix P] [--state-dir D] [CAMERA_ID ...]
    patrollink camera analyze VIDEO --camera ID [--district F] [--out FILE]
    patrollink camera stats [--state-dir D]

dispatch/cli.py calls `register(sub)` when this module exists.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

USAGE = """\
patrollink camera [--district F] [--nats URLS] [--prefix P] [--state-dir D] [CAMERA_ID ...]
       patrollink camera analyze VIDEO --camera ID [--district F] [--out FILE]
       patrollink camera stats [--state-dir D]"""

DESCRIPTION = """\
Watch the cameras of a district (all, or those named): each camera's stream is
read and analysed in a child process of its own; health goes to
cameras.<id>.health and alerts to alerts.camera.<id> through JetStream, kept
in an outbox under the state dir until acknowledged. The adapter needs the
engine's NATS server: --nats, $PATROLLINK_NATS, or the server `patrollink run`
/ `patrollink nats` started (.state/nats.url).

  analyze VIDEO --camera ID   run the detection pipeline over a recorded file as fast
                              as it can; one JSON line per frame and per alert event
  stats                       alerts, confirmations and dismissals per camera and rule
"""


def _default_state_dir() -> str:
    from dispatch.cli import STATE_DIR

    return str(Path(STATE_DIR) / "camera")


def register(sub: Any) -> None:
    from dispatch.cli import _district_arg, _nats_arg

    p = sub.add_parser(
        "camera", help="watch cameras (camera adapter); `camera analyze`, `camera stats`", usage=USAGE,
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("words", nargs="*", metavar="CAMERA_ID | analyze VIDEO | stats",
                   help="cameras to watch (default: all), or a sub-command")
    _district_arg(p)
    _nats_arg(p)
    p.add_argument("--state-dir", default=os.environ.get("PATROLLINK_CAMERA_STATE", _default_state_dir()),
                   help="outbox spool, offline events and feedback statistics (default .state/camera)")
    p.add_argument("--log-level", default="info")
    p.add_argument("--replicas", type=int, default=1, help="JetStream replicas if the adapter has to create the stream/bucket")
    p.add_argument("--pipeline", default=None, help="MODULE:FACTORY building the pipeline (default: adapters.camera.pipeline)")
    p.add_argument("--exercise", default=None, help="drill id: the alerts are drill traffic")
    # analyze
    p.add_argument("--camera", help="analyze: the camera whose zones and rules apply")
    p.add_argument("--out", help="analyze: JSON lines to this file (default: stdout)")
    p.set_defaults(func=cmd_camera)


def cmd_camera(a: argparse.Namespace) -> int:
    words = list(a.words)
    if words and words[0] == "analyze":
        return cmd_analyze(a, words[1:])
    if words and words[0] == "stats":
        if len(words) > 1:
            raise SystemExit(f"patrollink camera stats: unexpected {' '.join(words[1:])!r}")
        return cmd_stats(a)
    if words and words[0] == "watch":  # explicit form, for a camera named 'stats' or 'analyze'
        words = words[1:]
    if a.camera or a.out:
        raise SystemExit("patrollink camera: --camera and --out belong to `patrollink camera analyze VIDEO`")
    return cmd_watch(a, words)


# --------------------------------------------------------------------------- watch


def cmd_watch(a: argparse.Namespace, camera_ids: list[str]) -> int:
    import dispatch.cli as dcli
    from dispatch.cli import _client_urls

    until_signalled = getattr(dcli, "_until_signalled", None) or getattr(dcli, "until_signalled")  # renamed back and forth
    from dispatch.district import ConfigError
    from dispatch.logs import configure

    from adapters.camera.runner import CameraRunner, StateDirBusy, load_district_for_cameras

    configure(level=a.log_level)
    try:
        district = load_district_for_cameras(a.district)
    except ConfigError as e:
        print(f"patrollink camera: the district configuration has errors:\n{e}", file=sys.stderr)
        return 2
    urls = _client_urls(a.nats)
    factory = None
    if a.pipeline:
        from adapters.camera.worker import load_factory

        try:
            factory = load_factory(a.pipeline)
        except (ImportError, AttributeError) as e:
            raise SystemExit(f"patrollink camera: --pipeline {a.pipeline}: {e}") from None
    try:
        runner = CameraRunner(district, camera_ids or None, urls, prefix=a.prefix, state_dir=a.state_dir,
                              pipeline_factory=factory, replicas=a.replicas, exercise=a.exercise)
    except ValueError as e:
        print(f"patrollink camera: {e}", file=sys.stderr)
        return 2

    async def main() -> None:
        try:
            await runner.start()
        except StateDirBusy as e:
            raise SystemExit(f"patrollink camera: {e}") from None
        try:
            n = len(runner.cams)
            print(f"camera adapter watching {n} camera{'s' if n != 1 else ''} of {district.name} "
                  f"({', '.join(runner.cams)}); NATS {', '.join(urls)}; state in {a.state_dir}. Ctrl-C stops.",
                  file=sys.stderr, flush=True)
            await until_signalled()
            print("stopping: ending open events, sending what is left ...", file=sys.stderr, flush=True)
        finally:
            await runner.stop()

    asyncio.run(main())
    return 0


# --------------------------------------------------------------------------- analyze


def cmd_analyze(a: argparse.Namespace, rest: list[str]) -> int:
    from dispatch.cli import _load_district

    if len(rest) != 1:
        raise SystemExit("usage: patrollink camera analyze VIDEO --camera ID [--district F] [--out FILE]")
    video = Path(rest[0])
    if not video.is_file():
        raise SystemExit(f"patrollink camera analyze: {video}: no such file")
    if not a.camera:
        raise SystemExit("patrollink camera analyze: --camera ID is required (its zones and rules apply)")
    district = _load_district(a.district)
    camera = district.camera(a.camera)
    if camera is None:
        known = ", ".join(c.id for c in district.cameras) or "none"
        raise SystemExit(f"patrollink camera analyze: unknown camera {a.camera!r} (district {district.name} has: {known})")
    try:
        from adapters.camera.analyze import analyze
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("adapters.camera"):
            raise SystemExit("patrollink camera analyze: the analysis pipeline (adapters/camera/analyze.py) is not installed") from None
        raise
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            events = analyze(video, camera, f, tz=district.timezone)
        print(f"{video}: {len(events or [])} alert events; JSON lines in {a.out}", file=sys.stderr)
    else:
        analyze(video, camera, sys.stdout, tz=district.timezone)
    return 0


# --------------------------------------------------------------------------- stats


def cmd_stats(a: argparse.Namespace) -> int:
    from adapters.camera.stats import STATS_FILE, FeedbackStore, format_table

    path = Path(a.state_dir) / STATS_FILE
    if not path.exists():
        print(f"no camera statistics yet ({path} does not exist: has `patrollink camera` run with this --state-dir?)",
              file=sys.stderr)
        return 1
    store = FeedbackStore(path)
    try:
        rows = store.table()
    finally:
        store.close()
    print(format_table(rows))
    return 0
