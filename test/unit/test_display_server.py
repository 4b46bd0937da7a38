"""The display's web server without ROS or a browser: a real `DisplayServer` on a free loopback
port, asked with urllib (tokens, security headers, static-folder confinement, bad requests),
plus the store's matching of images to results by stamp."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request

import pytest

pytest.importorskip("aiohttp", reason="aiohttp missing: run `bash scripts/setup.sh` (requirements/ros.txt)")

from dms_net_ros.display.exam_store import ExamStore
from dms_net_ros.display.security import COOKIE, DisplayConfigError, check_bind, is_loopback, read_token
from dms_net_ros.display.server import DisplayServer

SEC = 1_000_000_000


def _exam_data(exam_id: str = "demo-1") -> dict:
    return {"exam_id": exam_id, "status": 0, "referable": True, "summary": "REFER: C 0.91 (left eye)"}


def _jpeg(item: object) -> bytes:
    return b"\xff\xd8jpeg-of-" + str(item).encode()


@pytest.fixture
def store() -> ExamStore:
    s = ExamStore(history=3, buffer=2)
    s.add_image("left", 5 * SEC, "L5", _jpeg)
    s.add_result(_exam_data(), 5 * SEC, 6 * SEC, _jpeg)
    return s


def _serve(store: ExamStore, **kwargs) -> DisplayServer:
    server = DisplayServer(store, port=0, **kwargs)
    server.start()
    return server


def _get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _raw_get(server: DisplayServer, path: str) -> tuple[int, bytes]:
    """A request line sent exactly as written (urllib would normalise ``..``)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_store_matches_images_to_results_by_stamp_either_order():
    s = ExamStore(history=2, buffer=2)
    s.add_image("left", 1 * SEC, "early-left", _jpeg)
    exam = s.add_result(_exam_data("a"), 1 * SEC, 2 * SEC, _jpeg)
    assert sorted(exam.images) == ["left"]  # the right eye and the overlays have not arrived
    assert s.add_image("right", 2 * SEC, "late-right", _jpeg) is exam  # a late image finds its exam
    assert s.add_image("left_attention", 1 * SEC, "overlay", _jpeg) is exam
    assert s.add_image("left", 9 * SEC, "unrelated", _jpeg) is None  # buffered, no exam names it
    assert exam.images["right"] == _jpeg("late-right")
    for i in range(3):  # the buffer and the history stay bounded
        s.add_image("right", (20 + i) * SEC, i, _jpeg)
        s.add_result(_exam_data(f"b{i}"), 0, 0, _jpeg)
    assert len(s._pending["right"]) == 2
    assert [e["exam_id"] for e in s.summaries()] == ["b1", "b2"]


def test_pages_api_and_images_carry_security_headers(store):
    server = _serve(store)
    try:
        status, headers, body = _get(server.url)
        assert status == 200 and b'src="/static/display.js"' in body
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "connect-src 'self' ws: wss:" in csp and "img-src 'self' data: blob:" in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        # no inline script
        assert b"<script>" not in body.replace(b'<script src="/static/display.js" defer></script>', b"")
        status, headers, body = _get(server.url + "api/state")
        state = json.loads(body)
        assert status == 200 and headers["Cache-Control"] == "no-store"
        assert [e["exam_id"] for e in state["exams"]] == ["demo-1"] and state["exams"][0]["images"] == ["left"]
        status, headers, body = _get(server.url + "api/exams/1/images/left.jpg")
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and body == _jpeg("L5")
        status, headers, _ = _get(server.url + "static/display.css")
        assert status == 200 and "Content-Security-Policy" in headers
    finally:
        server.stop()


def test_bad_requests_are_4xx_and_the_server_keeps_serving(store):
    server = _serve(store)
    try:
        assert _get(server.url + "api/exams/99")[0] == 404  # unknown exam
        assert _get(server.url + "api/exams/abc")[0] == 400  # not an integer
        assert _get(server.url + "api/exams/1/images/right.jpg")[0] == 404  # never received
        assert _get(server.url + "api/exams/1/images/secret.jpg")[0] == 404  # not a kind
        assert _get(server.url + "api/exams/-1/images/left.jpg")[0] == 404
        assert _get(server.url + "nothing-here")[0] == 404
        assert _get(server.url + "api/state")[0] == 200
    finally:
        server.stop()


@pytest.mark.parametrize("path", [
    "/static/../../setup.py", "/static/../server.py", "/static/%2e%2e/%2e%2e/setup.py",
    "/static/%2e%2e%2fserver.py", "/static/..%2f..%2fsetup.py", "/static/%2E%2E/exam_store.py",
])
def test_static_files_only_from_the_static_folder(store, path):
    server = _serve(store)
    try:
        status, body = _raw_get(server, path)
        assert status in (403, 404), (status, body[:200])
        assert b"setup(" not in body and b"import" not in body
        assert _get(server.url + "api/state")[0] == 200
    finally:
        server.stop()


def test_with_a_token_every_request_without_it_is_401(store):
    server = _serve(store, token="s3cret")
    try:
        for path in ("", "api/state", "api/exams/1", "api/exams/1/images/left.jpg", "static/display.js", "ws"):
            assert _get(server.url + path)[0] == 401, path
            assert _get(server.url + path + "?token=wrong")[0] == 401, path
        assert _get(server.url + "api/state", {"Authorization": "Bearer s3cret"})[0] == 200
        status, headers, _ = _get(server.url + "?token=s3cret")
        assert status == 200
        cookie = headers["Set-Cookie"]
        assert cookie.startswith(f"{COOKIE}=s3cret") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert _get(server.url + "api/state", {"Cookie": f"{COOKIE}=s3cret"})[0] == 200  # the page's later requests
        assert _get(server.url + "api/state", {"Cookie": f"{COOKIE}=nope"})[0] == 401
    finally:
        server.stop()


def test_non_loopback_bind_needs_a_token(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("")
    with pytest.raises(DisplayConfigError, match="token"):
        DisplayServer(ExamStore(), host="0.0.0.0", port=0)
    check_bind("0.0.0.0", "t")  # with a token it is allowed
    (tmp_path / "token").write_text("from-file\n")
    assert read_token("", str(tmp_path / "token")) == "from-file"
    with pytest.raises(DisplayConfigError, match="token_file"):
        read_token("", str(tmp_path / "missing"))
    (tmp_path / "blank").write_text("\n  \n")
    with pytest.raises(DisplayConfigError, match="the file is empty"):
        read_token("", str(tmp_path / "blank"))


def test_busy_port_is_one_line_error(store):
    server = _serve(store)
    try:
        with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1:\d+ .*port:=0"):
            DisplayServer(store, port=server.port).start()
    finally:
        server.stop()


def test_websocket_from_another_origin_is_refused_and_same_origin_gets_the_state(store):
    import asyncio

    import aiohttp

    server = _serve(store)

    async def connect(origin: str) -> object:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(server.url + "ws", headers={"Origin": origin},
                                              timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
                    return json.loads((await ws.receive(timeout=10)).data)
            except aiohttp.WSServerHandshakeError as err:
                return err.status

    try:
        assert asyncio.run(connect("http://evil.example")) == 403
        state = asyncio.run(connect(server.url.rstrip("/")))
        assert state["type"] == "state" and [e["exam_id"] for e in state["exams"]] == ["demo-1"]
    finally:
        server.stop()


def test_readme_lists_every_display_parameter_with_its_default():
    from pathlib import Path

    from dms_net_ros.display.parameters import DISPLAY_PARAMETERS

    readme = (Path(__file__).resolve().parents[2] / "docs" / "interface.md").read_text()
    section = readme[readme.index("### The clinician display"):]
    section = section[:section.index("\n### ", 10)]
    for spec in DISPLAY_PARAMETERS:
        default = str(spec.default).lower() if isinstance(spec.default, bool) else str(spec.default)
        row = next((line for line in section.splitlines()
                    if line.startswith("| ") and f"`{spec.name}`" in line.split("|")[1]), None)
        assert row is not None, spec.name
        assert (f"`{default}`" if default else "empty") in row.split("|")[2], (spec.name, row)
