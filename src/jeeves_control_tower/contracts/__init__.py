"""Machine-readable contracts of a deployed bus, from its registered message classes.

- :mod:`.schema`: JSON Schema of a message class, exactly what the wire decoder accepts;
- :mod:`.catalog`: the message types a contract lists, each with its pattern(s);
- :mod:`.asyncapi`: the AsyncAPI 3.0 document of the bus on its transports
  (``jeeves-ipc asyncapi``, ``/asyncapi.json`` of the HTTP face).

The OpenAPI 3.1 document of the HTTP face is :mod:`jeeves_control_tower.ipc.adapters.http.openapi`.
"""

from .asyncapi import asyncapi_document
from .catalog import MessageContract, catalog, patterns_of
from .schema import class_schema, field_schema

__all__ = [
    "MessageContract",
    "asyncapi_document",
    "catalog",
    "class_schema",
    "field_schema",
    "patterns_of",
]
