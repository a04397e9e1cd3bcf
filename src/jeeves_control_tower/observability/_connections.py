"""Time and capacity limits of the standalone endpoint's connections.

- :class:`RequestReader`: the raw reader under a connection's ``rfile``. Each request gets
  one deadline for all of it (line, headers and any body) and a byte budget; a client that
  trickles bytes hits the deadline however often it sends (a per-read timeout would be
  reset by every byte).
- :class:`Connections`: the admitted connections and what each is doing. At capacity a new
  connection sheds the sheddable connection that has been in its state longest instead of
  being refused. Sheddable: waiting for a request (idle keep-alive or still arriving),
  sending an answer (the client may not be reading), or answering a pipelined request (one
  already received when the previous answer was sent). Only a connection whose server is
  computing the answer to a request sent after its previous answer is protected, and only
  when every connection is protected is the new one refused. So tricklers, idle clients and
  clients that never read can never lock out a scraper.
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
        #: While True, reads return "no data" without touching the socket.
        self.probing = False

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

    def pending(self) -> bool:
        """Whether the kernel already holds bytes from the client (not blocking)."""
        try:
            self._sock.settimeout(0.0)
            return bool(self._sock.recv(1, socket.MSG_PEEK))
        except OSError:  # BlockingIOError (nothing yet) or the connection is gone
            return False

    def readinto(self, buffer: Any) -> int | None:
        if self.probing:
            return None  # "no data yet": lets the buffered reader show what it holds
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
        self.busy = False  # protected: never shed
        self.since = time.monotonic()  # when it entered its current state


class Connections:
    """At most ``limit`` admitted connections, each sheddable or protected (busy).

    Thread-safe. Contract with the server: :meth:`admit` before a connection's thread
    starts; :meth:`waiting` when its handler starts reading a request, :meth:`working` once
    it has a whole one and computes the answer, :meth:`sending` while the answer is sent;
    :meth:`remove` before the socket is closed. A shed socket is shut down here, under the
    lock (which wakes a blocked read or send at once), and so is never touched after its
    owner closed it.
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
        """Admit ``sock``, shedding the sheddable connection longest in its state if at the
        limit. False (and nothing shed) when every admitted connection is protected."""
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

    def working(self, sock: socket.socket, *, protected: bool = True) -> bool:
        """``sock`` has a whole request and its answer is being computed: never shed if
        ``protected``, else sheddable (oldest first). False if it was shed meanwhile: drop
        it without answering."""
        return self._move(sock, busy=protected)

    def sending(self, sock: socket.socket) -> bool:
        """``sock``'s answer is being sent: sheddable (oldest first), since a client that
        does not read would otherwise hold its slot. False if it was shed meanwhile."""
        return self._move(sock, busy=False)

    def _move(self, sock: socket.socket, *, busy: bool) -> bool:
        with self._lock:
            state = self._states.get(sock)
            if state is None:
                return False
            state.busy, state.since = busy, time.monotonic()
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
