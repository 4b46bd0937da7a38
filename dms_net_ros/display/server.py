"""The display's web server: aiohttp in its own asyncio thread beside the rclpy executor.

ROS callbacks never touch asyncio objects: they call `DisplayServer.publish` (thread-safe,
``loop.call_soon_threadsafe`` onto an asyncio queue), and one broadcaster task sends each
update to every open WebSocket in order. HTTP reads the `ExamStore` (thread-safe) directly.

Routes (all behind the token when one is set, `security`):

* ``/`` the page; ``/static/...`` only files of ``static/`` (no symlinks followed);
* ``/api/state`` every remembered exam, the latest node health and server info;
* ``/api/exams/<index>`` one exam; ``/api/exams/<index>/images/<kind>.jpg`` its JPEGs
  (kinds: `exam_store.KINDS`); a non-integer index is 400, an unknown one 404;
* ``/ws`` the live updates: ``{"type": "state"}`` on connect, then ``exam`` / ``health``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from dms_net_ros.display.exam_store import KINDS, ExamStore
from dms_net_ros.display.security import COOKIE, HEADERS, check_bind, request_token, token_matches

STATIC_DIR = Path(__file__).resolve().parent / "static"


class DisplayServer:
    """Serves ``store`` on ``host:port`` (0: a free port); `start` returns the URL."""

    def __init__(self, store: ExamStore, host: str = "127.0.0.1", port: int = 8080, token: str = "",
                 info: dict[str, Any] | None = None, static_dir: Path = STATIC_DIR) -> None:
        check_bind(host, token)
        self.store, self.host, self.port, self.token = store, host, int(port), token
        self.info = dict(info or {}, instance=secrets.token_hex(8))  # a restarted server numbers exams from 1 again
        self.static_dir = static_dir
        self.health: list[dict[str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._clients: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- the app ----------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.on_response_prepare.append(_security_headers)
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", self.static_dir, follow_symlinks=False, show_index=False)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/exams/{index}", self._exam)
        app.router.add_get("/api/exams/{index}/images/{kind}.jpg", self._image)
        app.router.add_get("/ws", self._ws)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.token and not token_matches(request_token(request.query, request.headers, request.cookies), self.token):
            raise web.HTTPUnauthorized(text="401: token missing or wrong: "
                                            "open the URL with ?token=<the display's token>")
        return await handler(request)

    async def _index(self, request: web.Request) -> web.StreamResponse:
        response = web.FileResponse(self.static_dir / "index.html")
        if self.token and token_matches(request.query.get("token"), self.token):
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict", path="/")
        return response

    def state(self) -> dict[str, Any]:
        return {"type": "state", "exams": self.store.summaries(), "health": self.health, "info": self.info}

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    def _exam_of(self, request: web.Request) -> Any:
        try:
            index = int(request.match_info["index"])
        except ValueError:
            raise web.HTTPBadRequest(text="400: exam index must be an integer, e.g. /api/exams/3") from None
        exam = self.store.get(index)
        if exam is None:
            raise web.HTTPNotFound(text=f"404: no exam {index} in the display's history "
                                        "(it keeps the most recent ones)")
        return exam

    async def _exam(self, request: web.Request) -> web.Response:
        return web.json_response(self._exam_of(request).summary())

    async def _image(self, request: web.Request) -> web.Response:
        exam, kind = self._exam_of(request), request.match_info["kind"]
        if kind not in KINDS:
            raise web.HTTPNotFound(text=f"404: no image kind {kind!r}: use one of {', '.join(KINDS)}")
        jpeg = exam.images.get(kind)
        if jpeg is None:
            raise web.HTTPNotFound(text=f"404: exam {exam.index} has no {kind} image "
                                        "(never received, or not matched by stamp)")
        return web.Response(body=jpeg, content_type="image/jpeg")

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin and urlsplit(origin).netloc != request.host:
            raise web.HTTPForbidden(text="403: WebSocket from another origin")
        ws = web.WebSocketResponse(heartbeat=20.0)
        await ws.prepare(request)
        self._clients.add(ws)
        try:
            await ws.send_str(json.dumps(self.state()))
            async for msg in ws:  # the page sends nothing we need; read until it closes
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._clients.discard(ws)
        return ws

    async def _broadcast(self) -> None:
        assert self._queue is not None
        while True:
            text = await self._queue.get()
            for ws in list(self._clients):
                try:
                    await ws.send_str(text)
                except (ConnectionError, RuntimeError):  # closing meanwhile: its handler removes it
                    self._clients.discard(ws)

    # -- thread-safe entry points ------------------------------------------------------
    def publish(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every page (any thread); dropped before start / after stop."""
        if message.get("type") == "health":
            self.health = message["health"]
        loop, queue = self._loop, self._queue
        if loop is None or queue is None or loop.is_closed():
            return
        text = json.dumps(message)
        try:
            loop.call_soon_threadsafe(queue.put_nowait, text)
        except RuntimeError:  # loop closed between the check and the call
            pass

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> str:
        """Bind, serve in a daemon thread and return the page URL (raises OSError, one line, on a bad bind)."""
        try:
            sock = socket.create_server((self.host, self.port),
                                        family=socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        except OSError as exc:
            raise OSError(f"cannot listen on {self.host}:{self.port} ({exc.strerror or exc}): "
                          "pick a free port (port:=0 picks one) or stop the other server") from None
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="dms-display-http", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"the display server did not start: {self._error or 'timed out'}")
        return self.url

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self._queue = asyncio.Queue()
            self._runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.SockSite(self._runner, sock).start())
            broadcaster = loop.create_task(self._broadcast())
            self._loop = loop
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            broadcaster.cancel()
            loop.run_until_complete(self._close_all())
            loop.close()

    async def _close_all(self) -> None:
        for ws in list(self._clients):  # 1001 going away: the page reconnects
            await ws.close(code=1001, message=b"display stopping")
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self, timeout: float = 5.0) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)
        self._loop = None


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
