"""Redis transport (needs the ``redis`` extra: ``pip install 'jeeves-control-tower[redis]'``)."""

from .transport import RedisTransport

__all__ = ["RedisTransport"]
