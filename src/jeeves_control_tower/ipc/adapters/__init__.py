"""Bridges from the bus to external message brokers.

Each transport lives in its own subpackage and is imported only when used, so the optional
client libraries (redis, nats-py) are never needed by the core.
"""

__all__: list[str] = []
