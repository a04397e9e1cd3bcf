"""RabbitMQ transport (needs the ``rabbitmq`` extra:
``pip install 'jeeves-control-tower[rabbitmq]'``)."""

from .transport import RabbitMQTransport

__all__ = ["RabbitMQTransport"]
