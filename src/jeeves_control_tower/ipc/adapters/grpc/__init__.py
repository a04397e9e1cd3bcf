"""The gRPC face of the bus (the ``grpc`` extra: ``pip install "jeeves-control-tower[grpc]"``).

- :func:`serve_grpc` / :class:`GrpcHub`: serve a bus and its coordinator as a hub
  (``jeeves-ipc hub --port N``);
- :class:`GrpcTransport`: join a local bus to a hub;
- :class:`GrpcServices`: serve a local coordinator's services through the hub's;
- :data:`PROTO`: the path of ``commbus.proto``, the language-neutral contract.
"""

from pathlib import Path

from ..extras import needs_extra

with needs_extra("grpc"):
    from .hub import GrpcHub, serve_grpc
    from .services import GrpcServices
    from .transport import GrpcTransport

__all__ = ["PROTO", "GrpcHub", "GrpcServices", "GrpcTransport", "serve_grpc"]

#: ``commbus.proto``, shipped inside the package.
PROTO = Path(__file__).with_name("commbus.proto")
