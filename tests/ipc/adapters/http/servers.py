"""Real local HTTP servers for the HTTP bridge's tests, each on a free loopback port.

- :func:`uvicorn_app`: a Starlette/ASGI app served by uvicorn in the test's event loop;
- :class:`RawServer`: a bare asyncio server answering each request with the bytes a test
  script returns (for answers no framework would send: garbage, lies, huge bodies).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn


@contextlib.asynccontextmanager
async def uvicorn_app(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port); yields its base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        access_log=False,
        ws="none",  # no websockets: uvicorn 0.30 imports a deprecated websockets API
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class Request:
    line: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RawServer:
    """``answer(request) -> bytes`` (awaitable allowed) is written back raw, then the
    connection is closed."""

    answer: Callable[[Request], bytes | Awaitable[bytes]]
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/dispatch"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *rest = head.decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in rest if h)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Request(line, headers, body)
            self.requests.append(request)
            out = self.answer(request)
            data = await out if not isinstance(out, bytes) else out
            writer.write(data)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def raw(status: str, body: bytes, headers: str = "") -> bytes:
    """A complete HTTP/1.1 response with ``Content-Length`` and ``Connection: close``."""
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{headers}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
