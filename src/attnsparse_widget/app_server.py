"""Voila as ``attnsparse app`` runs it: Voila's own entry point, with its kernel websocket guarded. The app runs this
file by its path, so that the server process does not import the package (and torch with it); it imports nothing
but the standard library, tornado and Voila. Three guards:

1. The legacy framing is refused. Voila's ``VoilaKernelWebsocketHandler.write_message`` reads the header of every
   binary message it forwards (to drop ``execute_input``) as if the connection spoke Jupyter's
   ``v1.kernel.websocket.jupyter.org`` framing (eight-byte little-endian offsets), whatever the client negotiated. A
   client that asks for no subprotocol gets the legacy framing (four-byte big-endian), and the first binary message
   the kernel sends it (every widget payload) makes that reader build a list of about 10**18 offsets: the server's
   one thread never returns, its memory grows by hundreds of MB per second until the machine runs out, and it
   answers nothing, not even SIGTERM (voila 0.5.13; the upstream report: ``docs/upstream/voila-legacy-websocket.md``).
   The app's own page always asks for v1 (JupyterLab's services): a kernel websocket that does not is answered 400,
   saying why, before the upgrade; and a v1 header is read only within the message's bytes.
2. What tornado buffers for a client that reads nothing is bounded (:data:`BACKLOG_LIMIT`; without bound otherwise),
   and that client's connection is closed when the bound is reached.
3. A page's connection going counts as its kernel's last activity, so that the idle cull (``app.CULL_IDLE_S``) ends
   the kernel of a vanished page that long after the page went, not after its last message, which may be long
   before (a page left open and quiet): a page whose network blips and reconnects within that time keeps its kernel.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

V1 = "v1.kernel.websocket.jupyter.org"
# what tornado may buffer for one client that does not read (it buffers without bound otherwise): far above what
# the widget sends at once (about 1 MB for one slider move at 8192 tokens; benchmarks/bench_messages.py)
BACKLOG_LIMIT = 64 << 20
BACKLOG_DROPPED = (
    f"attnsparse app: a kernel websocket client read nothing while {BACKLOG_LIMIT >> 20} MB waited for it; "
    "its connection is closed (a page that only stalled reconnects)"
)
LEGACY_REFUSED = (
    f"attnsparse app: the kernel websocket speaks only the {V1} subprotocol (Sec-WebSocket-Protocol); "
    "the legacy framing is refused (Voila misreads it). Connect with JupyterLab's services or offer that subprotocol."
)


def offers_v1(header: str | None) -> bool:
    """Whether a ``Sec-WebSocket-Protocol`` request header offers the v1 kernel protocol."""
    return header is not None and V1 in (p.strip() for p in header.split(","))


def v1_header(ws_msg: bytes) -> dict[str, Any] | None:
    """The header of a v1 binary kernel message (``[n][offset_0..offset_n-1][channel][header]...``), or None where
    the bytes are not one. Never reads an offset beyond the message, unlike Voila's reader."""
    if len(ws_msg) < 8:
        return None
    count = int.from_bytes(ws_msg[:8], "little")
    if count < 3 or 8 * (count + 1) > len(ws_msg):
        return None
    start, end = (int.from_bytes(ws_msg[8 * (i + 1) : 8 * (i + 2)], "little") for i in (1, 2))
    if not 8 * (count + 1) <= start <= end <= len(ws_msg):
        return None
    try:
        header = json.loads(ws_msg[start:end].decode("utf-8"))
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


def refusing_legacy(get: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """The handler's ``get``, answering 400 before the upgrade where the client does not offer the v1 framing."""
    from tornado import web

    async def guarded(self: Any, *args: Any, **kwargs: Any) -> None:
        if not offers_v1(self.request.headers.get("Sec-WebSocket-Protocol")):
            raise web.HTTPError(400, reason="legacy kernel websocket protocol refused", log_message=LEGACY_REFUSED)
        await get(self, *args, **kwargs)

    return guarded


def bounding_backlog(open_: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """The handler's ``open``, bounding what tornado buffers for this client to :data:`BACKLOG_LIMIT` bytes."""

    async def guarded(self: Any, *args: Any, **kwargs: Any) -> None:
        stream = getattr(self.ws_connection, "stream", None)
        if stream is not None:
            stream.max_write_buffer_size = BACKLOG_LIMIT
        await open_(self, *args, **kwargs)

    return guarded


def dropping_backlogged(write_message: Callable[..., Any]) -> Callable[..., Any]:
    """The handler's ``write_message``, closing the connection of a client whose backlog is full (it reads nothing:
    a page that merely stalled reconnects and gets its widget's state anew)."""
    from tornado.iostream import StreamBufferFullError

    def guarded(self: Any, message: Any, binary: bool = False) -> Any:
        try:
            return write_message(self, message, binary)
        except StreamBufferFullError:
            self.log.warning(BACKLOG_DROPPED)
            stream = getattr(self.ws_connection, "stream", None)
            if stream is not None:
                stream.close()  # no close frame: it could not be written either
            return None

    return guarded


def culled_after_close(on_close: Callable[[Any], None]) -> Callable[[Any], None]:
    """The handler's ``on_close``, counting the connection's end as its kernel's last activity (see above)."""

    def guarded(self: Any) -> None:
        kernel = getattr(self.kernel_manager, "_kernels", {}).get(getattr(self, "kernel_id", None))
        on_close(self)
        if kernel is not None and hasattr(kernel, "last_activity"):  # what jupyter_server's culler reads
            kernel.last_activity = datetime.now(timezone.utc)

    return guarded


def guard_voila() -> None:
    """Guard Voila's kernel websocket handler (the class Voila registers, changed in place: this process only)."""
    from voila.tornado import kernel_websocket_handler as module

    handler = module.VoilaKernelWebsocketHandler
    if getattr(handler, "_attnsparse_guarded", False):
        return
    handler.get = refusing_legacy(handler.get)
    handler.open = bounding_backlog(handler.open)
    handler.write_message = dropping_backlogged(handler.write_message)
    handler.on_close = culled_after_close(handler.on_close)
    module.read_header_from_binary_message = v1_header  # Voila's write_message looks it up at each call
    handler._attnsparse_guarded = True


def main() -> None:
    guard_voila()
    from voila.app import main as voila_main

    voila_main()


if __name__ == "__main__":
    main()
