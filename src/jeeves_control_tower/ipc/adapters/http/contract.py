"""How the HTTP face describes itself to AsyncAPI (the :mod:`..description` hook)."""

from __future__ import annotations

from ..description import ChannelDescription, ServerDescription

__all__ = ["HttpFaceDescription"]


class HttpFaceDescription:
    """The face as an AsyncAPI server and channels (the :mod:`..description` hook)."""

    def __init__(self, base_url: str) -> None:
        scheme, _, rest = base_url.partition("://")
        host, _, path = rest.partition("/")
        self.protocol = scheme or "http"
        self.host = host or "localhost"
        self.pathname = "/" + path.rstrip("/") if path.strip("/") else None

    def asyncapi_server(self) -> ServerDescription:
        return ServerDescription(
            self.host, self.protocol, self.pathname, "The bus's HTTP face (OpenAPI: /openapi.json)."
        )

    def asyncapi_channel(self, pattern: str, message_type: str) -> ChannelDescription:
        return ChannelDescription(
            f"/v1/{pattern}/{message_type}",
            "POST the payload as JSON (see /openapi.json for answers and errors).",
            operation_bindings={"http": {"method": "POST", "bindingVersion": "0.3.0"}},
        )
