"""Time and capacity limits of the standalone endpoint's connections.

- :class:`RequestReader`: the raw reader under a connection's ``rfile``. Each request gets
  one deadline for all of it (line, headers and any body) and a byte budget; a client that
  trickles bytes hits the deadline however often it sends (a per-read timeout would be
  reset by every byte).
- :class:`Connections`: the admitted connections and what each is doing. At capacity a new
  connection sheds the one that has waited longest for its request (idle keep-alive or
  still arriving) instead of being refused; only when every connection is busy answering
  is the new one refused. So tricklers and idle clients can never lock out a scraper.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from typing import Any

__all__ = ["Connections", "RequestReader", "RequestTimeout", "RequestTooLarge"]


class RequestTimeout(Exception):
    """The request did not arrive in full before its deadline."""


class RequestTooLarge(Exception):
    """The request is larger than its byte budget."""


class RequestReader(io.RawIOBase):
    """Reads a socket under the current request's deadline and byte budget.

    Not thread-safe: only the connection's handler thread reads. ``received`` counts the
    bytes read since :meth:`begin`, so a timeout can tell an idle connection from a
    half-sent request.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = 0.0
        self._budget = 0
        self.received = 0

    def begin(self, timeout: float, budget: int) -> None:
        """Start a request: ``timeout`` seconds and ``budget`` bytes for all of it."""
        self._deadline = time.monotonic() + timeout
        self._budget = budget
        self.received = 0

    def allow(self, extra: int) -> None:
        """Grow the current request's budget (by a body's declared length)."""
        self._budget += extra

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeout
        if self._budget <= 0:
            raise RequestTooLarge
        self._sock.settimeout(remaining)
        with memoryview(buffer) as view:
            try:
                n = self._sock.recv_into(view[: self._budget])
            except TimeoutError:
                raise RequestTimeout from None
        self._budget -= n
        self.received += n
        return n


class _State:
    __slots__ = ("busy", "since")

    def __init__(self) -> None:
        self.busy = False
        self.since = time.monotonic()


class Connections:
    """At most ``limit`` admitted connections, each waiting (for a request) or busy.

    Thread-safe. Contract with the server: :meth:`admit` before a connection's thread
    starts; :meth:`waiting` / :meth:`working` as its handler moves between reading a request
    and answering it; :meth:`remove` before the socket is closed. A shed socket is shut down
    here, under the lock, and so is never touched after its owner closed it.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("max_connections must be >= 1")
        self.limit = limit
        self._lock = threading.Lock()
        self._states: dict[socket.socket, _State] = {}
        self.shed = 0
        self.refused = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._states)

    def admit(self, sock: socket.socket) -> bool:
        """Admit ``sock``, shedding the longest-waiting connection if at the limit.
        False (and nothing shed) when every admitted connection is busy."""
        with self._lock:
            if len(self._states) >= self.limit:
                waiting = [(s.since, id(k), k) for k, s in self._states.items() if not s.busy]
                if not waiting:
                    self.refused += 1
                    return False
                victim = min(waiting)[2]
                del self._states[victim]
                self.shed += 1
                with contextlib.suppress(OSError):  # already gone
                    victim.shutdown(socket.SHUT_RDWR)  # wakes its handler's read at once
            self._states[sock] = _State()
            return True

    def waiting(self, sock: socket.socket) -> None:
        """``sock`` now waits for a request (sheddable; oldest first)."""
        with self._lock:
            state = self._states.get(sock)
            if state is not None:
                state.busy, state.since = False, time.monotonic()

    def working(self, sock: socket.socket) -> bool:
        """``sock`` has a whole request and is being answered (never shed). False if it
        was shed meanwhile: drop it without answering."""
        with self._lock:
            state = self._states.get(sock)
            if state is None:
                return False
            state.busy = True
            return True

    def shut_all(self) -> None:
        """Shut every admitted connection down (the server is closing): their handlers
        wake and end at once instead of at their deadlines."""
        with self._lock:
            for sock in self._states:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._states.clear()

    def remove(self, sock: socket.socket) -> None:
        with self._lock:
            self._states.pop(sock, None)
