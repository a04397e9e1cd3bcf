"""The connection pool every :class:`~.service.HttpService` of a process shares.

One ``httpx2.AsyncClient`` per :class:`HttpPool` (made on first use, on the running event
loop), bounded by ``max_connections`` (requests beyond it wait for a connection, within
their own attempt's timeout) and ``max_keepalive`` idle connections. TLS certificates are
verified unless ``verify=False`` (or an ``ssl.SSLContext`` of your own) is given; redirects
are never followed; proxies from the environment are ignored unless ``trust_env=True``.

:func:`default_pool` is the pool of the running event loop, made on first use and shared by
every ``HttpService`` built without ``pool=``; ``await close_default_pool()`` closes it
(call it at shutdown).
"""

from __future__ import annotations

import asyncio
import ssl
import weakref

import httpx2

__all__ = ["HttpPool", "close_default_pool", "default_pool"]


class HttpPool:
    """A bounded, shared HTTP connection pool (see the module docstring). Use it from one
    event loop; :meth:`aclose` closes its connections (it can be used again afterwards)."""

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_keepalive: int = 20,
        keepalive_expiry: float = 5.0,
        verify: bool | ssl.SSLContext = True,
        trust_env: bool = False,
    ) -> None:
        if max_connections < 1 or max_keepalive < 0:
            raise ValueError("max_connections >= 1 and max_keepalive >= 0 are required")
        self.limits = httpx2.Limits(
            max_connections=max_connections,
            max_keepalive_connections=min(max_keepalive, max_connections),
            keepalive_expiry=keepalive_expiry,
        )
        self.verify = verify
        self.trust_env = trust_env
        self._client: httpx2.AsyncClient | None = None

    def client(self) -> httpx2.AsyncClient:
        """The pool's client, made on first use."""
        client = self._client
        if client is None or client.is_closed:
            client = self._client = httpx2.AsyncClient(
                limits=self.limits,
                verify=self.verify,
                trust_env=self.trust_env,
                follow_redirects=False,
                timeout=None,  # each request passes its own
            )
        return client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, HttpPool] = (
    weakref.WeakKeyDictionary()
)


def default_pool() -> HttpPool:
    """The running event loop's shared pool (default limits, TLS verified)."""
    loop = asyncio.get_running_loop()
    pool = _defaults.get(loop)
    if pool is None:
        pool = _defaults[loop] = HttpPool()
    return pool


async def close_default_pool() -> None:
    """Close the running event loop's shared pool, if it was made."""
    pool = _defaults.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.aclose()
