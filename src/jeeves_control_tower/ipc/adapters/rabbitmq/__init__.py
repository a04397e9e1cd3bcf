"""RabbitMQ transport (needs the ``rabbitmq`` extra:
``pip install 'jeeves-control-tower[rabbitmq]'``)."""

from ..extras import needs_extra

with needs_extra("rabbitmq"):
    from .transport import RabbitMQTransport

__all__ = ["RabbitMQTransport"]
