"""NATS transport (needs the ``nats`` extra: ``pip install 'jeeves-control-tower[nats]'``)."""

from ..extras import needs_extra

with needs_extra("nats"):
    from .transport import NatsTransport

__all__ = ["NatsTransport"]
