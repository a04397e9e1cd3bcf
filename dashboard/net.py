"""One bounded HTTP GET: the only network primitive of the dashboard.

:func:`get` fetches a URL with ONE total deadline for everything (connect, request, status
line, headers, body) and at most ``max_bytes`` of body. urllib's ``timeout`` bounds each
socket operation, not the request: a server that trickles its headers or body one byte a
second would hold the caller for ever. Here a watchdog timer shuts the socket down when the
deadline passes, whatever the request is waiting for, and the body is read in chunks with
the deadline checked between them. (Name resolution is the one step it cannot interrupt:
a caller that must not wait runs :func:`get` on a worker thread, as the poller does.)

Redirects are never followed (a 3xx is an :class:`HTTPStatusError`), so a server cannot
bounce the bearer token to another origin; no proxy from the environment is used.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from urllib.parse import urlsplit

__all__ = ["GetError", "HTTPStatusError", "TimedOut", "TooLarge", "get"]

CHUNK = 64 * 1024


class GetError(Exception):
    """The GET gave no usable answer; the message says why, for the page."""


class HTTPStatusError(GetError):
    """The server answered with a status other than 2xx."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class TimedOut(GetError):
    """No complete answer within the deadline."""


class TooLarge(GetError):
    """The body is longer than allowed; ``body`` holds the first ``max_bytes`` bytes."""

    def __init__(self, max_bytes: int, body: bytes) -> None:
        super().__init__(f"answer larger than {max_bytes} bytes")
        self.body = body


def get(url: str, *, token: str = "", timeout: float = 2.0, max_bytes: int) -> bytes:
    """The body of ``GET url`` (``Accept: application/json``, ``Authorization: Bearer
    token`` when ``token`` is set), returned within ``timeout`` seconds in total or
    :class:`TimedOut`; :class:`TooLarge` past ``max_bytes``, :class:`HTTPStatusError` on a
    non-2xx status, :class:`GetError` on any other failure."""
    deadline = time.monotonic() + timeout
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise GetError("not an http(s) URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GetError("not an http(s) URL")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, port, timeout=max(timeout, 0.001))
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    fired = threading.Event()
    watchdog = threading.Timer(max(timeout, 0.0), _abort, (conn, fired))
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.connect()
        if time.monotonic() >= deadline:  # the watchdog fired while there was no socket
            raise TimedOut(f"timed out: no complete answer within {timeout:g} s")
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        if not 200 <= response.status < 300:
            raise HTTPStatusError(response.status)
        body = bytearray()
        while len(body) <= max_bytes:
            if time.monotonic() >= deadline:
                raise TimedOut(f"timed out: no complete answer within {timeout:g} s")
            chunk = response.read1(min(CHUNK, max_bytes + 1 - len(body)))
            if not chunk:
                break
            body += chunk
        if fired.is_set():  # cut short by the watchdog
            raise TimedOut(f"timed out: no complete answer within {timeout:g} s")
        if len(body) > max_bytes:
            raise TooLarge(max_bytes, bytes(body[:max_bytes]))
        return bytes(body)
    except GetError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if fired.is_set() or time.monotonic() >= deadline:
            raise TimedOut(f"timed out: no complete answer within {timeout:g} s") from None
        raise GetError(f"cannot reach the endpoint ({_reason(exc)})") from None
    finally:
        watchdog.cancel()
        conn.close()


def _abort(conn: http.client.HTTPConnection, fired: threading.Event) -> None:
    """The deadline passed: wake whatever the request is blocked on."""
    fired.set()
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"
