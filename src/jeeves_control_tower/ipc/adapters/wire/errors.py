"""The one error of the wire: what could not be encoded or decoded, and why."""

from __future__ import annotations

__all__ = ["WireError"]


class WireError(ValueError):
    """A frame could not be encoded or decoded. ``reason`` is the metric label:
    ``malformed``, ``oversized``, ``too_deep``, ``bad_version``, ``unknown_type``,
    ``bad_field``, ``invalid_message``, ``type_mismatch``, ``unencodable``,
    ``bad_headers``, ``bad_traceparent``; the adapters add ``wrong_destination`` and
    ``unexpected_reply`` (see :mod:`..inbound`)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        # What could be read of the frame before it was rejected (to answer a query).
        self.frame_id: str | None = None
        self.reply_to: str | None = None
        self.corr: str | None = None
