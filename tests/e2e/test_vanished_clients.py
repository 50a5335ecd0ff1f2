"""A client that stops reading, or vanishes, costs the server nothing after a bounded time (the app and JupyterLab).

The app (``attnsparse app``, Voila, the default model and text, the per-layer curve on so the first comparison
streams for a while), with two pages gone at once:
- a raw websocket to a page's kernel: one speaking the legacy framing is refused (400; it made Voila build a list of
  10**17 offsets or more and freeze, see app_server.py), one speaking v1 reads nothing for 8 s while the comparison
  streams, then drops without a close frame;
- a real Chromium tab, its browser process killed (no unload, no beacon) while the page's widget is still busy.
Throughout, a watchdog kills the server above 2 GB (so a regression cannot take the machine down); the server stays
within 300 MB of its size before, answers a static file within a second, and both kernels end within the cull time.

JupyterLab (the notebook widget): a raw client that starts the widget in a kernel, reads nothing for 8 s and drops
leaves the server within 300 MB and answering within a second (the notebook's kernel is the user's: it stays).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import websocket

from attnsparse_widget.app import CULL_IDLE_S, CULL_INTERVAL_S
from attnsparse_widget.app_server import LEGACY_REFUSED, V1

from .harness import CHROMIUM, FLAGS, VOILA_STATIC, free_port, jupyterlab, serving

pytestmark = pytest.mark.browser

GROWTH_LIMIT = 300 << 20  # what a vanished client may cost the server, at most
WATCHDOG_LIMIT = 2 << 30  # above this the server is killed: the test fails instead of the machine
HOLD_S = 8  # how long the raw client stays connected, reading nothing


class Watchdog:
    """Kills ``proc`` (and everything under it) as soon as its resident memory passes ``limit`` bytes."""

    def __init__(self, proc: psutil.Process, limit: int = WATCHDOG_LIMIT) -> None:
        self.proc, self.limit, self.fired = proc, limit, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            try:
                if self.proc.memory_info().rss > self.limit:
                    self.fired = True
                    for p in [*self.proc.children(recursive=True), self.proc]:
                        p.kill()
                    return
            except psutil.NoSuchProcess:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def kernels(root: psutil.Process) -> list[psutil.Process]:
    """The live kernels under ``root`` (a culled one may be a zombie for a moment: it is gone, not counted)."""
    found = []
    for p in root.children(recursive=True):
        try:
            if "ipykernel" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.NoSuchProcess:  # ZombieProcess included: it ended while we looked
            continue
    return found


def answer_seconds(url: str) -> float:
    """Seconds a GET of ``url`` takes (fails when there is no answer within five)."""
    start = time.perf_counter()
    urllib.request.urlopen(url, timeout=5).read()  # noqa: S310 - loopback
    return time.perf_counter() - start


def silent_client(url: str, subprotocols: list[str] | None) -> websocket.WebSocket:
    """A websocket client with a tiny receive buffer that is never read: the server's writes back up at once."""
    return websocket.create_connection(
        url, subprotocols=subprotocols, sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)], timeout=30
    )


def drop(client: websocket.WebSocket) -> None:
    """Gone without a close frame, as when a network dies."""
    client.sock.shutdown(socket.SHUT_RDWR)
    client.sock.close()


@contextmanager
def app_server(tmp_path: Path) -> Iterator[tuple[str, psutil.Process]]:
    """``attnsparse app`` on a free port; yields its URL and the Voila server process."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "app.log", "w")  # noqa: SIM115 - closed below
    app = subprocess.Popen(
        [sys.executable, "-m", "attnsparse_widget.cli", "app", f"--port={port}"], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        serving(f"{url}/{VOILA_STATIC}", tmp_path / "app.log")
        (server,) = [p for p in psutil.Process(app.pid).children() if "app_server" in " ".join(p.cmdline())]
        yield url, server
    finally:
        app.send_signal(signal.SIGTERM)
        try:
            app.wait(30)
        except subprocess.TimeoutExpired:
            for p in psutil.Process(app.pid).children(recursive=True):
                p.kill()
            app.kill()
        log.close()


def page_kernel(url: str) -> str:
    """Load the app's page as a script would (no browser): its kernel starts and runs the comparison."""
    html = urllib.request.urlopen(url + "/", timeout=300).read().decode()  # noqa: S310 - loopback
    start = html.index('"kernelId": "') + len('"kernelId": "')
    return html[start : html.index('"', start)]


def chromium_killed_while_busy(url: str) -> None:
    """Open the app in Chromium and kill the browser's processes (SIGKILL) while the widget is still computing."""
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(url + "/", wait_until="domcontentloaded", timeout=120_000)
        page.wait_for_function(  # the main view painted, the later stages still streaming
            "() => { const r = document.querySelector('.asw-root');"
            " return r && r.dataset.busy === '1' && r.querySelector('.asw-main')?.dataset.rendered; }",
            timeout=300_000,
            polling=100,
        )
        for proc in psutil.Process().children(recursive=True):
            if proc.name().startswith("chrom"):
                proc.kill()
        try:
            browser.close()
        except Error:
            pass  # the browser is gone: that is the point


def test_app_survives_a_silent_websocket_and_a_killed_browser(tmp_path: Path) -> None:
    with app_server(tmp_path) as (url, server):
        watchdog = Watchdog(server)
        try:
            before = server.memory_info().rss
            kernel = page_kernel(url)
            ws_url = url.replace("http", "ws") + f"/api/kernels/{kernel}/channels?session_id={uuid.uuid4().hex}"
            with pytest.raises(websocket.WebSocketBadStatusException) as refused:
                silent_client(ws_url, None)  # the legacy framing
            assert refused.value.status_code == 400
            assert LEGACY_REFUSED in (tmp_path / "app.log").read_text()

            client = silent_client(ws_url, [V1])
            assert client.subprotocol == V1
            growth = []
            for _ in range(HOLD_S * 2):  # connected, reading nothing, while the comparison streams
                time.sleep(0.5)
                growth.append(server.memory_info().rss - before)
            drop(client)
            dropped = time.monotonic()

            chromium_killed_while_busy(url)
            assert len(kernels(server)) == 2  # the script's page and the browser's, both gone

            slowest = 0.0
            deadline = dropped + CULL_IDLE_S + 4 * CULL_INTERVAL_S + 120  # + the comparison's remaining stages
            while kernels(server) and time.monotonic() < deadline:
                growth.append(server.memory_info().rss - before)
                slowest = max(slowest, answer_seconds(f"{url}/{VOILA_STATIC}"))
                time.sleep(1)
            ended_after = time.monotonic() - dropped
        finally:
            watchdog.stop()
        assert not watchdog.fired, "the server passed 2 GB and was killed"
        assert max(growth) < GROWTH_LIMIT, f"the server grew by {max(growth) >> 20} MB"
        assert slowest < 1.0, f"a static file took {slowest:.2f} s"
        assert not kernels(server), f"kernels still running {ended_after:.0f} s after their pages went"
        print(f"app server growth at most {max(growth) >> 20} MB; slowest answer {slowest:.3f} s; kernels ended")
        print(f"{ended_after:.0f} s after the drop")


LAB_CELL = "import attnsparse_widget as aw\nw = aw.show(None)\nw"


def execute_request(code: str) -> str:
    """A legacy-framed (JSON) execute_request."""
    header = {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "session": "", "version": "5.3"}
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
    message = {"header": header, "parent_header": {}, "metadata": {}, "content": content, "buffers": []}
    return json.dumps({**message, "channel": "shell"})


def test_jupyterlab_survives_a_client_that_stops_reading(tmp_path: Path) -> None:
    with jupyterlab(tmp_path) as url:
        server = next(
            p
            for p in psutil.Process().children(recursive=True)
            if "jupyterlab" in " ".join(p.cmdline()) and str(tmp_path) in " ".join(p.cmdline())
        )
        watchdog = Watchdog(server)
        try:
            made = urllib.request.Request(f"{url}/api/kernels", data=b"{}", method="POST")  # noqa: S310
            kernel = json.loads(urllib.request.urlopen(made, timeout=60).read())["id"]  # noqa: S310
            before = server.memory_info().rss
            client = silent_client(url.replace("http", "ws") + f"/api/kernels/{kernel}/channels", None)
            client.send(execute_request(LAB_CELL))  # the widget computes and streams to a client that never reads
            growth = []
            for _ in range(HOLD_S * 2):
                time.sleep(0.5)
                growth.append(server.memory_info().rss - before)
            drop(client)
            slowest = 0.0
            for _ in range(20):
                growth.append(server.memory_info().rss - before)
                slowest = max(slowest, answer_seconds(f"{url}/api/status"))
                time.sleep(0.5)
            assert len(kernels(server)) == 1  # the notebook's kernel is the user's: it stays, and works
            urllib.request.urlopen(  # noqa: S310
                urllib.request.Request(f"{url}/api/kernels/{kernel}", method="DELETE"), timeout=30
            )
        finally:
            watchdog.stop()
        assert not watchdog.fired, "the server passed 2 GB and was killed"
        assert max(growth) < GROWTH_LIMIT, f"the server grew by {max(growth) >> 20} MB"
        assert slowest < 1.0, f"the server took {slowest:.2f} s to answer"
        print(f"JupyterLab server growth at most {max(growth) >> 20} MB; slowest answer {slowest:.3f} s")


@pytest.mark.unit
def test_the_guard_reads_v1_headers_and_refuses_the_legacy_framing() -> None:
    from jupyter_server.services.kernels.connection.base import serialize_binary_message, serialize_msg_to_ws_v1

    from attnsparse_widget.app_server import offers_v1, v1_header

    assert offers_v1(f"foo, {V1}") and not offers_v1(None) and not offers_v1(f"{V1}.x")
    header = {"msg_type": "comm_msg", "msg_id": "1"}
    parts = [json.dumps(p).encode() for p in (header, {}, {}, {"data": 1})] + [b"\x00" * 100]
    assert v1_header(serialize_msg_to_ws_v1(parts, "iopub")) == header  # jupyter_server's own v1 framing
    # the legacy framing of the same message (jupyter_server's serializer), which Voila read as v1 and froze on
    legacy = serialize_binary_message({"header": header, "buffers": [b"\x00" * 100]})
    assert int.from_bytes(legacy[:8], "little") > 10**17  # the number of offsets Voila set out to read
    assert v1_header(legacy) is None and v1_header(b"") is None and v1_header(b"\xff" * 7) is None


@pytest.mark.unit
def test_a_client_that_reads_nothing_is_let_go_once_its_backlog_is_full() -> None:
    from tornado.iostream import IOStream

    from attnsparse_widget.app_server import BACKLOG_LIMIT, bounding_backlog, dropping_backlogged

    async def scenario() -> tuple[int, object, bool]:
        ours, peer = socket.socketpair()  # the peer never reads
        handler = SimpleNamespace(ws_connection=SimpleNamespace(stream=IOStream(ours)), log=logging.getLogger("t"))

        async def open_(self: object) -> None:
            pass

        await bounding_backlog(open_)(handler)
        stream = handler.ws_connection.stream

        def write_message(self: object, message: bytes, binary: bool = False) -> object:
            return stream.write(message)  # what tornado's websocket does with a frame

        write = dropping_backlogged(write_message)
        written = write(handler, b"\0" * (BACKLOG_LIMIT - 1000), True)  # tornado's own check decides
        dropped = write(handler, b"\0" * (8 << 20), True)  # more than the socket's own buffer can take
        peer.close()
        return stream.max_write_buffer_size, (written is not None, dropped), stream.closed()

    limit, results, closed = asyncio.run(scenario())
    assert limit == BACKLOG_LIMIT and results == (True, None) and closed


@pytest.mark.unit
def test_a_connection_going_counts_as_its_kernels_last_activity() -> None:
    from attnsparse_widget.app_server import culled_after_close

    long_ago = datetime(2020, 1, 1, tzinfo=timezone.utc)
    kernel = SimpleNamespace(last_activity=long_ago)
    handler = SimpleNamespace(kernel_id="k", kernel_manager=SimpleNamespace(_kernels={"k": kernel}))
    calls: list[object] = []
    culled_after_close(calls.append)(handler)
    assert calls == [handler]  # the handler's own on_close ran
    assert (datetime.now(timezone.utc) - kernel.last_activity).total_seconds() < 5
