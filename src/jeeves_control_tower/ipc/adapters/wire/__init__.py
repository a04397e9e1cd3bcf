"""The wire every broker transport speaks, independent of any broker.

- :mod:`.codec`: :class:`WireCodec`, frames to bytes and back (:mod:`.decoding` reads,
  :mod:`.frames` holds the frame types and limits, :mod:`.formats` the byte formats);
- :mod:`.classes`: :class:`MessageRegistry`, the message classes a frame may name
  (:mod:`.entries` turns one class into a payload and back, :mod:`.fields` checks its
  fields; :class:`WireError` in :mod:`.errors`);
- :mod:`.batching`: :class:`EventBatcher`, the events of one loop iteration as one frame;
- :mod:`.signing`: :class:`Signer`, the optional HMAC over every frame.

Not to be confused with the coordinator's *service* registry (``ipc``): this registry
maps wire names to message classes.
"""

from .batching import EventBatcher
from .classes import MessageRegistry, default_registry, register_message
from .codec import Frame, Reply, WireCodec
from .errors import WireError
from .signing import TAG_BYTES, Signer

__all__ = [
    "TAG_BYTES",
    "EventBatcher",
    "Frame",
    "MessageRegistry",
    "Reply",
    "Signer",
    "WireCodec",
    "WireError",
    "default_registry",
    "register_message",
]
