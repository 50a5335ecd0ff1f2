"""Block every network connection that leaves the machine: ``install()`` patches the socket module so that
connecting to (or resolving) anything but a loopback address raises :class:`NetworkBlocked`.

The test suite installs it for every test (conftest.py) and, through a ``sitecustomize`` on ``PYTHONPATH``, in the
kernels that execute the notebooks: the product must work offline, and a test that tried to download something
fails loudly instead of passing only where there is a network. Loopback stays open (JupyterLab, Dask's local
cluster, kernels).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


class NetworkBlocked(OSError):
    """A connection to a non-loopback address was attempted while the network is blocked."""


def _is_local(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name other than localhost: resolving it would go out


def _check(address: Any) -> None:
    host = address[0] if isinstance(address, tuple) and address else address
    if not _is_local(host):
        raise NetworkBlocked(f"network access blocked by the test suite: {address!r}")


_originals: dict[str, Any] = {}


def install() -> None:
    """Patch ``socket`` (idempotent)."""
    if _originals:
        return
    _originals.update(
        connect=socket.socket.connect,
        connect_ex=socket.socket.connect_ex,
        getaddrinfo=socket.getaddrinfo,
        create_connection=socket.create_connection,
    )

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check(address)
        return _originals["connect"](self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check(address)
        return _originals["connect_ex"](self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None:
            _check((host,))
        return _originals["getaddrinfo"](host, *args, **kwargs)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
        _check(address)
        return _originals["create_connection"](address, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    socket.create_connection = create_connection  # type: ignore[assignment]


def uninstall() -> None:
    if not _originals:
        return
    socket.socket.connect = _originals["connect"]  # type: ignore[method-assign]
    socket.socket.connect_ex = _originals["connect_ex"]  # type: ignore[method-assign]
    socket.getaddrinfo = _originals["getaddrinfo"]  # type: ignore[assignment]
    socket.create_connection = _originals["create_connection"]  # type: ignore[assignment]
    _originals.clear()


SITECUSTOMIZE = """import sys
sys.path.insert(0, {tests!r})
import no_network
no_network.install()
"""
