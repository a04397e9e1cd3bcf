"""Attribute names and values for the bus's spans, from the OpenTelemetry semantic conventions.

Messaging attributes come from ``opentelemetry.semconv`` (messaging conventions, which are
still incubating upstream); the few the conventions have no name for (dispatch service,
method, priority, attempts, outcome) live under the ``jeeves.`` namespace and are declared
here, once. Nothing else in the package spells an attribute name.
"""

from __future__ import annotations

from opentelemetry.semconv._incubating.attributes.messaging_attributes import (
    MESSAGING_BATCH_MESSAGE_COUNT,
    MESSAGING_CONSUMER_GROUP_NAME,
    MESSAGING_DESTINATION_NAME,
    MESSAGING_MESSAGE_ID,
    MESSAGING_OPERATION_NAME,
    MESSAGING_OPERATION_TYPE,
    MESSAGING_SYSTEM,
    MessagingOperationTypeValues,
)
from opentelemetry.semconv.attributes.code_attributes import CODE_FUNCTION_NAME
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT

__all__ = [
    "CODE_FUNCTION_NAME",
    "DISPATCH_ATTEMPT",
    "DISPATCH_ATTEMPTS",
    "DISPATCH_METHOD",
    "DISPATCH_OUTCOME",
    "DISPATCH_PRIORITY",
    "DISPATCH_SERVICE",
    "ERROR_TYPE",
    "MESSAGE_OUTCOME",
    "MESSAGE_PAYLOAD",
    "MESSAGING_BATCH_MESSAGE_COUNT",
    "MESSAGING_CONSUMER_GROUP_NAME",
    "MESSAGING_DESTINATION_NAME",
    "MESSAGING_MESSAGE_ID",
    "MESSAGING_OPERATION_NAME",
    "MESSAGING_OPERATION_TYPE",
    "MESSAGING_SYSTEM",
    "OP_PROCESS",
    "OP_RECEIVE",
    "OP_SEND",
    "SCHEMA_URL",
    "SEMCONV_VERSION",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "SYSTEM",
    "TIMEOUT",
    "error_type",
    "qualified_error_type",
]

#: The one semantic-conventions version every span, kind and attribute here follows
#: (messaging: ``send`` PRODUCER, ``receive`` CLIENT, ``process`` CONSUMER since 1.28;
#: ``code.function.name``). Spelled out rather than taken from ``Schemas``: the declared
#: minimum ``opentelemetry-semantic-conventions`` (0.54b0) has every attribute used here,
#: with the same names, but its ``Schemas`` enum stops at 1.33 (tested by the
#: minimum-versions job).
SEMCONV_VERSION = "1.44.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

#: ``messaging.system`` of every span this package emits.
SYSTEM = "jeeves.commbus"

#: ``messaging.operation.type`` of producer/client spans (publish, send, query, dispatch)
#: and of consumer/server spans (one per handler run or dispatch attempt).
OP_SEND = MessagingOperationTypeValues.SEND.value
OP_PROCESS = MessagingOperationTypeValues.PROCESS.value
#: ``messaging.operation.type`` of the span of a message a transport delivered.
OP_RECEIVE = MessagingOperationTypeValues.RECEIVE.value

#: ``error.type`` of a timed-out query, handler run, attempt or dispatch. The conventions
#: allow a short low-cardinality identifier here; a timeout is reported as this string
#: rather than the class name (``TimeoutError``) so that it reads the same everywhere.
TIMEOUT = "timeout"

DISPATCH_SERVICE = "jeeves.dispatch.service"
DISPATCH_METHOD = "jeeves.dispatch.method"
DISPATCH_PRIORITY = "jeeves.dispatch.priority"
DISPATCH_ATTEMPTS = "jeeves.dispatch.attempts"
DISPATCH_ATTEMPT = "jeeves.dispatch.attempt"
DISPATCH_OUTCOME = "jeeves.dispatch.outcome"
#: Set on a producer span when the bus outcome is not ``ok`` (``no_handler``, ``aborted``...).
MESSAGE_OUTCOME = "jeeves.message.outcome"
#: ``repr`` of the message, only when payload recording was opted into.
MESSAGE_PAYLOAD = "jeeves.message.payload"


def error_type(exc: BaseException) -> str:
    """Short, low-cardinality name of an error, for metric labels and flow records:
    ``"timeout"`` for a ``TimeoutError``, ``"cancelled"`` for a cancellation, else the
    class's ``__qualname__``."""
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    cls = type(exc)
    if cls.__name__ == "CancelledError":
        return "cancelled"
    return cls.__qualname__


def qualified_error_type(exc: BaseException) -> str:
    """``error.type`` for spans: as :func:`error_type`, but module-qualified for classes
    outside ``builtins``, as the conventions recommend."""
    short = error_type(exc)
    if short in (TIMEOUT, "cancelled"):
        return short
    module = type(exc).__module__
    return short if module == "builtins" else f"{module}.{short}"
