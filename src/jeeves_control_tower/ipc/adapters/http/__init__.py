"""The HTTP bridge: dispatch to HTTP services, and an HTTP face for the bus.

- :class:`HttpService` (:mod:`.service`, the ``http`` extra: httpx2): a dispatch handler
  that POSTs each attempt to an HTTP endpoint (JSON contract in :mod:`.envelope`), over a
  shared bounded pool (:mod:`.pool`);
- :func:`create_app` (:mod:`.app`, the ``asgi`` extra: Starlette): the bus's HTTP face,
  ``POST /v1/{publish,send,query}/{type}`` and ``/v1/dispatch/{service}``, with
  ``/openapi.json`` (:mod:`.openapi`) and ``/asyncapi.json``.

Each name is imported on first access, so using one side never needs the other's
library.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..extras import needs_extra

__all__ = [
    "HttpPool",
    "HttpService",
    "HttpServiceError",
    "close_default_pool",
    "create_app",
    "default_pool",
    "openapi_document",
]

_WHERE = {
    "HttpPool": ".pool",
    "close_default_pool": ".pool",
    "default_pool": ".pool",
    "HttpService": ".service",
    "HttpServiceError": ".service",
    "create_app": ".app",
    "openapi_document": ".openapi",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(name)
    with needs_extra("http"):
        module = importlib.import_module(where, __name__)
    return getattr(module, name)
