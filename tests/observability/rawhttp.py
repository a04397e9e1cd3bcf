"""HTTP over a bare socket, for requests no well-behaved client would send: malformed,
pipelined, with bodies, or trickled one byte at a time."""

from __future__ import annotations

import itertools
import json
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

HOST = "127.0.0.1"


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def read_response(stream: BinaryIO, head: bool = False) -> RawResponse | None:
    """One response from ``stream``; None if the server closed the connection first."""
    line = stream.readline(65536)
    if not line:
        return None
    version, status, *_ = line.decode("latin-1").split(" ", 2)
    assert version == "HTTP/1.1", line
    headers: dict[str, str] = {}
    while (header := stream.readline(65536)) not in (b"\r\n", b"\n", b""):
        name, _, value = header.decode("latin-1").partition(":")
        assert name.lower() not in headers, f"repeated header {name}"
        headers[name.lower()] = value.strip()
    size = 0 if head else int(headers.get("content-length", "0"))
    return RawResponse(int(status), headers, stream.read(size))


def exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[list[RawResponse], bool]:
    """Send ``data`` at once, then read responses until the server closes the connection
    or goes quiet for ``timeout`` seconds. Returns the responses and whether it closed."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(data)
        responses: list[RawResponse] = []
        with sock.makefile("rb") as stream:
            try:
                while (response := read_response(stream)) is not None:
                    responses.append(response)
            except TimeoutError:
                return responses, False
            except ConnectionResetError:
                pass
        return responses, True


class Trickler:
    """A client that sends one byte of a never-ending request every ``interval`` seconds
    (a header line that never ends) and notes when, and with what, the server hangs up."""

    def __init__(self, port: int, interval: float = 0.3) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=5)
        self.opened = time.monotonic()
        self.interval = interval
        self.sent = 0
        self.answer = b""
        self.closed_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        data = itertools.chain(
            b"GET /api/stats HTTP/1.1\r\nHost: x\r\nX-Slow: ", itertools.repeat(ord("a"))
        )
        try:
            while not self._stop.is_set():
                self.sock.send(bytes([next(data)]))
                self.sent += 1
                readable, _, _ = select.select([self.sock], [], [], self.interval)
                if readable:
                    chunk = self.sock.recv(4096)
                    if not chunk:
                        break
                    self.answer += chunk
        except OSError:
            pass  # reset or broken pipe: the server hung up
        if not self._stop.is_set():
            self.closed_at = time.monotonic()

    @property
    def lasted(self) -> float | None:
        """Seconds from connecting until the server hung up (None while still open)."""
        return None if self.closed_at is None else self.closed_at - self.opened

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def wait_for(condition: Any, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll ``condition()`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)


class NonReaders:
    """``count`` clients that each pipeline ``requests`` times ``request``, never read an
    answer, and reconnect as soon as the server hangs up (a slow-read attack)."""

    def __init__(self, port: int, count: int, request: bytes, requests: int = 400) -> None:
        self.port = port
        self.data = request * requests
        self.connects = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            sock = socket.socket()
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # fills up soon
                sock.settimeout(5)
                sock.connect((HOST, self.port))
                self.connects += 1
                sock.sendall(self.data)
                hangup = select.poll()  # never read: wait for the server to hang up
                hangup.register(sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
                while not self._stop.is_set() and not hangup.poll(100):
                    pass
            except OSError:
                self._stop.wait(0.05)  # reset or refused: try again
            finally:
                sock.close()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
