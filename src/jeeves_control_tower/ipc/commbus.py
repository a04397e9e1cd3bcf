"""The bus's public names at the path its exceptions report.

The bus lives in :mod:`jeeves_control_tower.ipc.bus`; import it from
:mod:`jeeves_control_tower.ipc`. This module stays because ``error.type`` on spans and logs
names the bus's exceptions ``jeeves_control_tower.ipc.commbus.NoHandlerError`` (and so on),
a value dashboards and alert rules may select on: the name must stay importable where it
says.
"""

from .bus import (
    CommBusProtocol,
    InMemoryCommBus,
    NoHandlerError,
    QueryAbortedError,
    Transport,
    TransportError,
    get_commbus,
    reset_commbus,
)

__all__ = [
    "CommBusProtocol",
    "InMemoryCommBus",
    "NoHandlerError",
    "QueryAbortedError",
    "Transport",
    "TransportError",
    "get_commbus",
    "reset_commbus",
]
