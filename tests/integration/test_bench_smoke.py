"""`python -m bench.engine --quick` runs end to end (the engine, then the floor) and prints its JSON as the last line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO_ROOT = Path(__file__).resolve().parents[2]

POSITIVE = (
    "nats_rtt_p50_ms",
    "nats_rtt_p99_ms",
    "alert_to_order_p50_ms",
    "alert_to_order_p99_ms",
    "choose_unit_p50_ms",
    "choose_unit_p99_ms",
)


@pytest.mark.timeout(300)
def test_quick_benchmark_prints_every_figure_as_json_on_its_last_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.engine", "--quick"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[bench]" in proc.stderr, "progress lines go to stderr"
    last = proc.stdout.strip().splitlines()[-1]
    result = json.loads(last)

    for key in POSITIVE:
        assert isinstance(result[key], (int, float)) and result[key] > 0, (key, result[key])
    # the highest rate whose p99 stayed under 50 ms: on an overloaded machine even the first
    # step of the quick series may miss, which is a figure (0), not a broken benchmark
    assert isinstance(result["alerts_per_s_max"], (int, float)) and result["alerts_per_s_max"] >= 0
    assert result["details"]["engine"]["ramp"], "the rising-rate series ran"
    assert result["details"]["engine"]["sustained"]["ordered"] > 0

    # the floor: the same load against a relay with no rules (bench.floor), every alert ordered
    # and against the bare relay (no key-value writes, nothing confirmed)
    for key in ("floor", "floor_bare"):
        floor = result[key]
        assert floor["alert_to_order_p50_ms"] > 0 and floor["alert_to_order_p99_ms"] >= floor["alert_to_order_p50_ms"], key
        assert floor["cpu_ms_per_alert"] > 0 and isinstance(floor["meets_target"], bool), key
        ran = result["details"][key]
        assert ran["sustained"]["waiting"] == 0 and ran["sustained"]["ordered"] == ran["sustained"]["alerts"], key
        assert ran["key_value_writes_failed"] == 0 and ran["errors"] == 0, key

    m = result["machine"]
    assert m["cores"] >= 1 and m["cpu_model"] and m["python"]
    t = result["targets"]
    assert isinstance(t["alert_to_order_p99"], bool) and isinstance(t["choose_unit_p99"], bool)
    assert t["alert_to_order_p99_ms_max"] == pytest.approx(5 * result["nats_rtt_p99_ms"], abs=0.01)
    assert t["choose_unit_p99_ms_max"] == 2.0
