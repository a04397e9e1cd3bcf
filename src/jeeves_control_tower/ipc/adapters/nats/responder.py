"""Where :class:`QueryRunner` used to live (it is shared with the gRPC transport now)."""

from ..responder import QueryRunner

__all__ = ["QueryRunner"]
