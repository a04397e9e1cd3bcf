"""Testing tools for applications and transports of the bus.

- :class:`TestTransport` (with its :class:`TestBroker`): test handlers without a broker.
  A drop-in for ``RedisTransport.connect(bus, ...)`` that runs every handler in this
  process, through the real wire codec, and records what was published, sent and
  queried. Needs nothing beyond the core package.
- :mod:`jeeves_control_tower.testing.conformance`: the transport conformance suite, a
  pytest test class a transport subclasses to run the contract against itself. It
  imports pytest: ``pip install 'jeeves-control-tower[testing]'``; import it from the
  submodule (this package does not, so the harness works without pytest).
- :func:`eventually`: wait for a condition a broker makes true asynchronously.

See docs/testing.md. No module of the library imports this package.
"""

from .polling import eventually
from .transport import Record, TestBroker, TestTransport

__all__ = ["Record", "TestBroker", "TestTransport", "eventually"]
