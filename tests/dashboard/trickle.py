"""A hostile HTTP server for the deadline tests: it answers with its headers, then sends
its body one byte a second (urllib's timeout, per socket read, never fired)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def trickling_server(headers_too: bool = False) -> Iterator[str]:
    """The base URL of a server that trickles every answer, one byte a second (its
    headers too with ``headers_too``), until the client goes away."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            head += b"Content-Length: 100000\r\n\r\n{"
            try:
                if headers_too:
                    for byte in head:
                        conn.sendall(bytes([byte]))
                        if stop.wait(1.0):
                            return
                else:
                    conn.sendall(head)
                while not stop.wait(1.0):
                    conn.sendall(b" ")
            except OSError:
                pass  # the client gave up

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        acceptor.join(5)
        time.sleep(0)
