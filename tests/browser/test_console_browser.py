"""The operator console and patrol terminal in a real headless Chromium, against the real console
server, a real nats-server, the real engine (build_app), a synthetic camera served as live MJPEG
(simulators/mjpeg.py) and the real camera adapter (CameraRunner) watching it.

One scenario, in the order a shift would see it:

1. the operator logs in and camera cam01's tile plays live video over WebRTC (frames counted with
   requestVideoFrameCallback, and two canvas grabs of the <video> differ);
2. the adapter sees the walker enter the gate: the alert appears in the queue with its snapshot,
   the engine's order is on the chosen unit's terminal, the operator confirms;
3. the officer acknowledges: the console shows it and the acknowledge timer stops; en route;
4. drill traffic: a drill unit gets a DRILL order, a drill incident nobody can take escalates:
   supervisor banner, drill banner, drill incidents apart from real ones;
5. the operator flags an incident by clicking the map: the nearest unit's terminal shows the
   order within a second of the click; no other unit sees it (page and API); later one is flagged
   from a camera tile's flag button;
6. screenshots of both pages at that moment (test-artifacts/);
7. on scene, cleared; an order nobody acknowledges shows the ACK LATE warning;
8. no page asked any host but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from adapters.console.devstack import DevStack

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(420)]

NEAR_CAM01 = (30.2066, 114.8985)
P03_HOME = (30.2035905, 114.9063417)
A07_HOME = (30.2072261, 114.9013503)
NEAR_P03 = (30.2030, 114.9058)
DRILL = "drill-7"

# In-page clocks (both pages run on this machine, so Date.now() is one clock): when a button was
# clicked on the console, and when an order card first appeared on a terminal. Latencies are
# measured between those two, without Playwright's own round trips.
CLICK_CLOCK = """
window.__clicks = [];
document.addEventListener('click', (e) => { const b = e.target.closest && e.target.closest('button');
  if (b) window.__clicks.push({id: b.id, act: b.dataset.act || '', event: b.dataset.event || '', t: Date.now()}); }, true);
"""
ORDER_CLOCK = """
window.__orders = {};
new MutationObserver(() => { for (const el of document.querySelectorAll('.t-order')) { const k = el.dataset.order;
  if (!(k in window.__orders)) window.__orders[k] = {incident: el.dataset.incident, t: Date.now()}; } })
  .observe(document, {childList: true, subtree: true});
"""


async def login(context: Any, base: str, user: str, pw: str, path: str) -> Any:
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto(base + path)
    assert "/login" in page.url  # logged out: sent to the login page
    await page.fill("#username", user)
    await page.fill("#password", pw)
    await page.click("#submit")
    await page.wait_for_url(lambda url: "/login" not in url and url.split("?")[0].endswith(path))
    return page


async def map_click(page: Any, lat: float, lon: float) -> None:
    x, y = await page.evaluate(
        """([lat, lon]) => { const m = PLConsole.map; const [x, y] = m.xy(lat, lon);
            const pt = m.svg.createSVGPoint(); pt.x = x; pt.y = y; const s = pt.matrixTransform(m.svg.getScreenCTM());
            return [s.x, s.y]; }""",
        [lat, lon],
    )
    await page.mouse.click(x, y)


async def video_changes(page: Any, camera: str) -> dict[str, Any]:
    return await page.evaluate(
        """async (cam) => {
            const v = document.querySelector(`.tile[data-camera="${cam}"] video`);
            const c = document.createElement('canvas'); c.width = 160; c.height = 90; const g = c.getContext('2d');
            g.drawImage(v, 0, 0, 160, 90); const a = g.getImageData(0, 0, 160, 90).data;
            const f0 = +v.closest('.tile').dataset.frames;
            await new Promise(r => setTimeout(r, 2500));
            g.drawImage(v, 0, 0, 160, 90); const b = g.getImageData(0, 0, 160, 90).data;
            let diff = 0, lit = 0;
            for (let i = 0; i < a.length; i += 4) { diff += Math.abs(a[i] - b[i]) + Math.abs(a[i+1] - b[i+1]) + Math.abs(a[i+2] - b[i+2]); lit += a[i] + a[i+1] + a[i+2]; }
            return {w: v.videoWidth, h: v.videoHeight, diff, lit, frames: +v.closest('.tile').dataset.frames - f0};
        }""",
        camera,
    )


async def test_console_and_terminal_in_chromium(chromium, nats_server, tmp_path, local_only, artifacts):
    positions = {"p07": NEAR_CAM01, "p03": P03_HOME}
    stack = DevStack(
        nats_server.url, "br" + str(int(time.time()) % 100000), tmp_path,
        positions=positions, unit_accounts=["p07", "p03", "a07"],
        scenes={"cam01": "walk_through_gate", "cam02": "loiter_gate"}, scene_t0=-10.0, adapter_cameras=["cam01"],
        policy={"ack_timeout_s": {1: 45, 2: 45, 3: 4}},
    )
    await stack.start()
    stack.browser_units |= {"p07", "p03"}
    try:
        await _scenario(chromium, stack, local_only, artifacts)
    finally:
        await stack.stop()


async def _scenario(chromium: Any, stack: DevStack, local_only: Any, artifacts: Any) -> None:
    base = stack.console_url
    ctx_op = await chromium.new_context(viewport={"width": 1600, "height": 900})
    ctx_p07 = await chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                         geolocation={"latitude": NEAR_CAM01[0], "longitude": NEAR_CAM01[1], "accuracy": 12}, permissions=["geolocation"])
    ctx_p03 = await chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                         geolocation={"latitude": P03_HOME[0], "longitude": P03_HOME[1], "accuracy": 9}, permissions=["geolocation"])
    ctx_a07 = await chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)  # no location: by hand
    for c in (ctx_op, ctx_p07, ctx_p03, ctx_a07):
        await local_only.attach(c)
    await ctx_op.add_init_script(CLICK_CLOCK)
    for c in (ctx_p07, ctx_p03, ctx_a07):
        await c.add_init_script(ORDER_CLOCK)

    # ---------------------------------------------------------------- 1. log in; live video over WebRTC
    op = await login(ctx_op, base, "op1", stack.password("op1"), "/console")
    p07 = await login(ctx_p07, base, "p07", stack.password("p07"), "/terminal")
    p03 = await login(ctx_p03, base, "p03", stack.password("p03"), "/terminal")
    a07 = await login(ctx_a07, base, "a07", stack.password("a07"), "/terminal")
    await op.wait_for_selector('.tile[data-camera="cam01"][data-mode="live"]', timeout=20000)
    await op.wait_for_function("() => +document.querySelector('.tile[data-camera=\"cam01\"]').dataset.frames > 20", timeout=20000)
    v = await video_changes(op, "cam01")
    assert (v["w"], v["h"]) == (640, 360), v
    assert v["frames"] >= 3 and v["lit"] > 0 and v["diff"] > 0, f"the video does not play: {v}"
    feed = stack.server.console.feeds.feeds["cam01"]
    assert feed.viewers >= 1 and feed.encode == "shared" and feed.decoded > 0  # one decode, shared
    assert await op.locator('.tile[data-camera="cam01"] .hl').inner_text(timeout=15000) != ""
    await op.wait_for_selector('.tile[data-camera="cam01"][data-health="online"]', timeout=20000)

    # a unit without GPS sets its position by hand on the map
    await a07.click("#byHand")
    await a07.wait_for_selector("#posmap:not(.hidden)")
    box = await a07.locator("#posmap").bounding_box()
    await a07.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await a07.wait_for_function("() => document.getElementById('pos').textContent.includes('set by hand')")
    shell = stack.engine_rt.need_shell()
    await _until(lambda: shell.state.units["a07"].fix_time is not None, "a07's hand-set position at the engine")

    # ---------------------------------------------------------------- 2. the adapter's alert, the order, confirm
    li = op.locator('#aq li[data-camera="cam01"]').first
    await li.wait_for(timeout=60000)  # the walker enters the gate ~15 s after the scene starts
    await op.wait_for_function(
        "() => { const i = document.querySelector('#aq li[data-camera=\"cam01\"] img'); return i && i.complete && i.naturalWidth > 0; }",
        timeout=10000)
    event_id = await li.get_attribute("data-event")
    alert = await op.evaluate("(e) => PLConsole.alerts.get(e)", event_id)
    assert alert["kind"] == "intrusion" and alert["zones"] == ["gate"] and alert["snapshot"]
    iid = await _console_wait(op, "(e) => { const a = PLConsole.alerts.get(e); return a && a.incident_id; }", event_id)
    assert "INTRUSION" in (await li.inner_text()).upper()
    await op.wait_for_selector('.tile[data-camera="cam01"].alerting', timeout=5000)
    chosen = await _console_wait(op, "(i) => { const x = PLConsole.incidents.get(i); return x && x.unit; }", iid)
    assert chosen == "p07"
    await li.locator('button[data-act="confirm"]').click()
    await p07.wait_for_selector(f'.t-order[data-incident="{iid}"]', timeout=5000)
    clicked = await _last_click(op, "confirm")
    seen = await _order_seen(p07, iid)
    # the engine orders on the camera alert itself; the confirmation upgrades it: the order is on the
    # terminal before the click, or within a second of it
    confirm_to_terminal = (seen - clicked) / 1000
    assert confirm_to_terminal < 1.0, confirm_to_terminal
    alert_seen = await op.evaluate("(e) => PLConsole.alerts.get(e).first_time", event_id)
    await op.wait_for_function("(e) => { const a = PLConsole.alerts.get(e); return a && a.verdict && a.verdict.verdict === 'confirmed'; }", arg=event_id, timeout=5000)
    await op.wait_for_selector(f'#aq li[data-event="{event_id}"] .verdict.confirmed', timeout=5000)
    assert "by op1" in await op.locator(f'#aq li[data-event="{event_id}"] .verdict').inner_text()
    await p07.wait_for_function("() => { const i = document.querySelector('.t-order img.snap'); return !!i && i.naturalWidth > 0; }", timeout=10000)
    assert not await p03.locator(".t-order").count(), "p03 sees p07's order"

    # ---------------------------------------------------------------- 3. acknowledge: the console shows it, the timer stops
    row = op.locator(f'#incRows tr[data-incident="{iid}"]')
    assert await row.locator('.ackcell [data-timer="running"]').count() == 1
    await p07.click('button[data-reply="ack"]')
    await row.locator('td .badge[data-state="acknowledged"]').first.wait_for(timeout=3000)
    stopped = row.locator('.ackcell [data-timer="stopped"]')
    await stopped.wait_for(timeout=3000)
    first = await stopped.inner_text()
    await asyncio.sleep(1.5)
    assert await stopped.inner_text() == first and first.startswith("✓ ACK")
    await p07.click('button[data-reply="en_route"]')
    await row.locator('td .badge[data-state="en_route"]').first.wait_for(timeout=3000)
    await op.wait_for_selector(f'.L-routes .route[data-incident="{iid}"]', state="attached", timeout=3000)

    # ---------------------------------------------------------------- 4. drill: a drill unit's order; a drill escalation
    from dispatch.events import UnitPosition, encode

    await stack.nc.publish(stack.engine_rt.subjects.unit_position("a07"),
                           encode(UnitPosition(unit="a07", lat=A07_HOME[0], lon=A07_HOME[1], exercise=DRILL)))
    await _until(lambda: shell.state.units["a07"].exercise == DRILL, "a07 in the drill")
    await stack.publish_camera_alert("cam02", "intrusion", priority=2, exercise=DRILL, snapshot=await _still(stack, "cam02"))
    await a07.wait_for_selector(".t-order.drill", timeout=5000)
    await a07.wait_for_selector("#drillBanner", timeout=5000)
    assert "DRILL" in await a07.locator(".t-order .drilltag").inner_text()
    await op.wait_for_selector("#drillBanner", timeout=5000)
    # a drill weapon incident: only police take weapons, no police officer is in the drill -> escalates
    await map_click(op, 30.2101, 114.9040)
    await op.wait_for_selector("#dlgFlag[open]")
    await op.select_option("#flagKind", "weapon")
    await op.check('input[name="flagPri"][value="1"]')
    await op.fill("#flagNote", "drill: man with a knife")
    await op.select_option("#flagDrill", DRILL)
    await op.click("#flagSend")
    banner = op.locator(".banner-escalation")
    await banner.wait_for(timeout=5000)
    assert "SUPERVISOR" in await banner.inner_text() and "ESCALATED" in await banner.inner_text()
    # and it is heard: the camera alert chimed, the escalation sounded the alarm (audio unlocked by the
    # operator's earlier clicks, as a browser requires)
    chimes = await op.evaluate("PLConsole.chimes")
    assert any(c["what"] == "alert" for c in chimes), chimes
    assert any(c["what"] == "escalation" and c["played"] for c in chimes), chimes
    await op.wait_for_selector("#incRows tr.section.drill", timeout=3000)
    drill_rows = await op.evaluate("[...document.querySelectorAll('#incRows tr')].map(r => r.classList.contains('section') ? (r.classList.contains('drill') ? 'DRILL' : 'REAL') : (r.classList.contains('drillrow') ? 'd' : 'r'))")
    split = drill_rows.index("DRILL")
    assert "d" not in drill_rows[:split] and "r" not in drill_rows[split:], drill_rows  # drill incidents never mix with real ones

    # ---------------------------------------------------------------- 5. flag by clicking the map -> dispatched
    await map_click(op, *NEAR_P03)
    await op.wait_for_selector("#dlgFlag[open]")
    await op.select_option("#flagKind", "fight")
    await op.check('input[name="flagPri"][value="2"]')
    await op.fill("#flagNote", "two men fighting outside the shop")
    await op.click("#flagSend")
    await p03.wait_for_selector(".t-order", timeout=5000)
    flag_iid = await p03.locator(".t-order").get_attribute("data-incident")
    flag_to_terminal = (await _order_seen(p03, flag_iid) - await _last_click(op, "flagSend")) / 1000
    assert 0 < flag_to_terminal < 1.0, f"the order reached the terminal {flag_to_terminal:.3f} s after the click"
    await op.wait_for_selector(f'#incRows tr[data-incident="{flag_iid}"]', timeout=3000)
    assert (await op.evaluate("(i) => PLConsole.incidents.get(i).unit", flag_iid)) == "p03"
    # p07 never sees p03's order: not on its page, and the API refuses
    assert await p07.locator(f'.t-order[data-incident="{flag_iid}"]').count() == 0
    status = await p07.evaluate("fetch('/api/units/p03/order').then(r => r.status)")
    assert status == 403
    ws_status = await p07.evaluate("""new Promise(r => { const w = new WebSocket('ws://' + location.host + '/ws?unit=p03');
        w.onopen = () => r('open'); w.onerror = () => r('refused'); })""")
    assert ws_status == "refused"
    assert await p07.evaluate("PLTerminal.order && PLTerminal.order.incident_id") == iid

    # ---------------------------------------------------------------- 6. screenshots at a realistic moment of the drill
    await op.wait_for_timeout(1500)
    await op.screenshot(path=str(artifacts / "console-drill.png"))
    await p03.screenshot(path=str(artifacts / "terminal-p03-order.png"), full_page=True)
    await a07.screenshot(path=str(artifacts / "terminal-a07-drill.png"), full_page=True)
    await p07.screenshot(path=str(artifacts / "terminal-p07-en-route.png"), full_page=True)

    # ---------------------------------------------------------------- 7. on scene, cleared; a late acknowledgement
    await p03.click('button[data-reply="ack"]')
    await p07.click('button[data-reply="on_scene"]')
    await row.locator('td .badge[data-state="on_scene"]').first.wait_for(timeout=3000)
    await p07.click('button[data-reply="cleared"]')
    await p07.wait_for_selector("#dlgClear[open]")
    await p07.select_option("#clearReason", "gone on arrival")
    await p07.click('#clearForm button[type="submit"]')
    await row.locator('td .badge[data-state="resolved"]').first.wait_for(timeout=3000)
    await p07.wait_for_selector("#none:not(.hidden)", timeout=3000)
    await _until(lambda: shell.state.units["p07"].state.value == "available", "p07 free")
    # the operator flags what they see on cam01's feed (its tile's flag button, not the map); priority 3
    # orders must be acknowledged within 4 s in this district: nobody does
    await op.click('.tile[data-camera="cam01"] .flagbtn')
    await op.wait_for_selector("#dlgFlag[open]")
    assert "camera cam01" in await op.locator("#flagPlace").inner_text()
    assert not await op.evaluate("document.querySelector('.tile[data-camera=\"cam01\"]').classList.contains('big')")
    await op.select_option("#flagKind", "suspicious")
    await op.check('input[name="flagPri"][value="3"]')
    await op.click("#flagSend")
    await p07.wait_for_selector(".t-order", timeout=2000)
    late_iid = await p07.locator(".t-order").get_attribute("data-incident")
    assert shell.state.incidents[late_iid].camera == "cam01"  # flagged on the feed: the incident names the camera
    late_row = op.locator(f'#incRows tr[data-incident="{late_iid}"]')
    await late_row.locator('[data-warn="ack-late"]').first.wait_for(timeout=10000)
    assert "ACK LATE" in await late_row.locator(".ackcell").inner_text()
    await p07.wait_for_selector(f'.t-order[data-incident="{late_iid}"]', state="detached", timeout=10000)  # withdrawn
    await op.screenshot(path=str(artifacts / "console-late-ack.png"))

    # ---------------------------------------------------------------- 8. nothing but 127.0.0.1; no script errors
    local_only.assert_local()
    for page in (op, p07, p03, a07):
        assert not page.errors, page.errors
    print(json.dumps({"confirm_to_terminal_s": round(confirm_to_terminal, 3), "flag_to_terminal_s": round(flag_to_terminal, 3),
                      "alert_first_time": alert_seen, "video": v, "feeds": stack.server.console.feeds.status()["cam01"]}, default=str))
    for c in (ctx_op, ctx_p07, ctx_p03, ctx_a07):
        await c.close()


async def _last_click(page: Any, what: str) -> float:
    clicks = await page.evaluate("() => window.__clicks")
    return [c for c in clicks if what in (c["id"], c["act"])][-1]["t"]


async def _order_seen(page: Any, incident: str) -> float:
    orders = await page.evaluate("() => window.__orders")
    return min(o["t"] for o in orders.values() if o["incident"] == incident)


async def _until(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _console_wait(page: Any, fn: str, arg: Any, timeout: float = 10000) -> Any:
    h = await page.wait_for_function(fn, arg=arg, timeout=timeout)
    return await h.json_value()


async def _still(stack: DevStack, camera: str) -> bytes:
    return await stack.server.console.feeds.feeds[camera].snapshot_jpeg()


async def test_tiles_fall_back_to_stills_without_webrtc(chromium, nats_server, tmp_path, local_only):
    """A browser that cannot do WebRTC (here: no RTCPeerConnection at all) gets still pictures."""
    stack = DevStack(nats_server.url, "st" + str(int(time.time()) % 100000), tmp_path, positions={},
                     scenes={"cam01": "walk_through_gate"}, keep_positions_fresh=False)
    await stack.start()
    try:
        ctx = await chromium.new_context(viewport={"width": 1600, "height": 900})
        await local_only.attach(ctx)
        await ctx.add_init_script("delete window.RTCPeerConnection;")
        op = await login(ctx, stack.console_url, "op1", stack.password("op1"), "/console")
        tile = op.locator('.tile[data-camera="cam01"][data-mode="still"]')
        await tile.wait_for(timeout=20000)
        first = await op.locator('.tile[data-camera="cam01"] img.still').get_attribute("src")
        await op.wait_for_function(
            """(src) => { const i = document.querySelector('.tile[data-camera="cam01"] img.still');
                          return i.src !== src && i.complete && i.naturalWidth === 640; }""", arg=first, timeout=10000)
        # a camera nobody serves says so, in words
        dead = op.locator('.tile[data-camera="cam05"][data-mode="none"] .novideo')
        await dead.wait_for(timeout=20000)
        assert "NO VIDEO" in await dead.inner_text()
        assert stack.server.console.feeds.feeds["cam01"].viewers == 0  # stills only, no peer connection
        local_only.assert_local()
        assert not op.errors, op.errors
        await ctx.close()
    finally:
        await stack.stop()
