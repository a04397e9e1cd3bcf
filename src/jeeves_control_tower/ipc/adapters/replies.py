"""Reading the reply to a query this process sent: its result, or the matching exception."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import NoHandlerError, QueryAbortedError
from .metrics import RECEIVED, AdapterMetrics
from .wire import Signer, WireCodec, WireError

__all__ = ["BAD_SIGNATURE", "UNEXPECTED_REPLY", "RemoteError", "read_reply"]

#: The ``commbus_wire_rejected_total`` reason of a reply whose ``corr`` is not the one
#: the query was sent with.
UNEXPECTED_REPLY = "unexpected_reply"
#: ... of a frame without a valid signature, when the transport has a ``signing_key``.
BAD_SIGNATURE = "bad_signature"


class RemoteError(RuntimeError):
    """A query's handler in another process raised ``remote_type``; or the reply to a
    query could not be decoded (``remote_type == "WireError"``)."""

    def __init__(self, message_type: str, remote_type: str, text: str) -> None:
        super().__init__(f"query {message_type!r} failed remotely: {remote_type}: {text}")
        self.message_type = message_type
        self.remote_type = remote_type
        self.remote_message = text


def read_reply(
    raw: bytes,
    message_type: str,
    corr: str,
    *,
    codec: WireCodec,
    metrics: AdapterMetrics,
    signer: Signer | None,
    reject: Callable[[WireError, str], None],
) -> Any:
    """The result carried by the reply frame ``raw``, or the matching exception raised
    (:class:`NoHandlerError`, ``TimeoutError``, :class:`QueryAbortedError`,
    :class:`RemoteError`). The reply must carry ``corr``, the query's unguessable
    correlation id; only a ``rejected`` error (a responder that could not read the query,
    so not its corr either) may come without one. An undecodable, unsigned (when
    ``signer`` is set) or unexpected reply is counted, handed to ``reject`` and raised
    as a :class:`RemoteError` of ``remote_type == "WireError"``."""
    try:
        if signer is not None:
            unsealed = signer.open(raw)
            if unsealed is None:
                codec.count_rejected(BAD_SIGNATURE)
                raise WireError(BAD_SIGNATURE, "the reply has no valid signature")
            raw = unsealed
        reply = codec.decode_reply(raw)
        if reply.corr != corr and (reply.corr is not None or reply.kind != "rejected"):
            codec.count_rejected(UNEXPECTED_REPLY)
            raise WireError(UNEXPECTED_REPLY, "the reply does not carry the query's corr")
    except WireError as exc:
        reject(exc, "reply")
        raise RemoteError(message_type, "WireError", f"undecodable reply: {exc}") from None
    metrics.wire(RECEIVED, "reply")
    if reply.ok:
        return reply.result
    where = f"query {message_type!r} (remote {reply.error_type}: {reply.message})"
    if reply.kind == "no_handler":
        raise NoHandlerError(f"no handler answered {where}")
    if reply.kind == "timeout":
        raise TimeoutError(f"the remote handler timed out: {where}")
    if reply.kind == "aborted":
        raise QueryAbortedError(f"aborted by remote middleware: {where}")
    raise RemoteError(message_type, reply.error_type, reply.message)
