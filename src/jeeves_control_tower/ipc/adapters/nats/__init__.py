"""NATS transport (needs the ``nats`` extra: ``pip install 'jeeves-control-tower[nats]'``)."""

from .transport import NatsTransport

__all__ = ["NatsTransport"]
