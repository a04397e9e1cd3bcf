"""Which advertised URLs the dashboard may follow, and which may get the bearer token.

An advertised URL comes from the broker, so it is untrusted: :class:`AllowList` admits
by default the exact origins of the endpoints the user gave, plus the rules of
``$JEEVES_FLEET_ALLOW`` (:data:`ALLOW_ENV`); the token goes only to an origin a rule names
exactly (see :meth:`AllowList.trusts`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["ALLOW_ENV", "AllowList"]

#: Environment variable: extra allow-list rules, comma-separated (see :class:`AllowList`).
ALLOW_ENV = "JEEVES_FLEET_ALLOW"

_Rule = tuple[str, str, int | None]  # scheme, host ("*.x" = any subdomain of x), port


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _parts(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    return parts.scheme, parts.hostname.lower(), port or _default_port(parts.scheme)


@dataclass(frozen=True)
class AllowList:
    """Which URLs the dashboard may follow, and which may get the bearer token.

    A rule is ``(scheme, host, port)``; ``host`` may be ``*.domain`` (any subdomain, not
    the domain itself) and ``port`` ``None`` (any). A URL is followed if a rule admits it
    (:meth:`allows`); the token goes only where a rule names the origin exactly: a host,
    not a wildcard, and a port (:meth:`trusts`)."""

    rules: frozenset[_Rule]

    @classmethod
    def for_endpoints(cls, endpoints: Iterable[str], extra: str = "") -> AllowList:
        """The exact origins (scheme, host and port) of ``endpoints``, plus the rules in
        ``extra`` (comma/space-separated ``scheme://host[:port]`` or
        ``scheme://*.domain[:port]``; malformed ones are ignored, see :meth:`parse`)."""
        rules = set(filter(None, map(_parts, endpoints)))
        return cls(frozenset(rules | set(cls.parse(extra)[0])))

    @staticmethod
    def parse(text: str) -> tuple[list[_Rule], list[str]]:
        """``(rules, rejected)`` from a comma/space-separated list of rules."""
        rules: list[_Rule] = []
        rejected: list[str] = []
        for raw in (text or "").replace(",", " ").split():
            wildcard = "://*." in raw
            parts = _parts(raw.replace("://*.", "://", 1))
            tail = urlsplit(raw).path if parts else ""
            if parts is None or tail.strip("/") or "@" in raw or "?" in raw or "#" in raw:
                rejected.append(raw)
                continue
            scheme, host, _ = parts
            explicit = urlsplit(raw.replace("://*.", "://", 1)).port
            rules.append((scheme, f"*.{host}" if wildcard else host, explicit))
        return rules, rejected

    def allows(self, url: str) -> bool:
        """Whether ``url`` may be fetched at all."""
        parts = _parts(url)
        if parts is None:
            return False
        scheme, host, port = parts
        for r_scheme, r_host, r_port in self.rules:
            if r_scheme != scheme or (r_port is not None and r_port != port):
                continue
            if r_host == host or (r_host.startswith("*.") and host.endswith(r_host[1:])):
                return True
        return False

    def trusts(self, url: str) -> bool:
        """Whether the bearer token may be sent to ``url``: its exact origin is a rule."""
        parts = _parts(url)
        return parts is not None and not parts[1].startswith("*.") and parts in self.rules
