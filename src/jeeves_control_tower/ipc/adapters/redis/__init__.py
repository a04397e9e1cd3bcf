"""Redis transport (needs the ``redis`` extra: ``pip install 'jeeves-control-tower[redis]'``)."""

from ..extras import needs_extra

with needs_extra("redis"):
    from .transport import RedisTransport

__all__ = ["RedisTransport"]
