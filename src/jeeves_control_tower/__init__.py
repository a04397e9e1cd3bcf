"""jeeves-control-tower: an observable, instrumented IPC kit for asyncio services."""

__version__ = "0.1.0"
