"""The AsyncAPI 3.0 document: valid against the official schema (@asyncapi/specs, installed
by scripts/setup with ``npm ci`` in tests/asyncapi_schema), every internal reference
resolves, and each transport's channels are where the transport really sends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from jeeves_control_tower.contracts import asyncapi_document
from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.ipc.adapters.grpc import GrpcTransport
from jeeves_control_tower.ipc.adapters.http.contract import HttpFaceDescription
from jeeves_control_tower.ipc.adapters.nats import NatsTransport
from jeeves_control_tower.ipc.adapters.rabbitmq import RabbitMQTransport
from jeeves_control_tower.ipc.adapters.redis import RedisTransport
from tests.helpers import unavailable
from tests.ipc.adapters.http.messages import registry

SPECS = Path(__file__).parents[1] / "asyncapi_schema" / "node_modules" / "@asyncapi" / "specs"
SCHEMA = SPECS / "schemas" / "3.0.0-without-$id.json"


@pytest.fixture(scope="module")
def official() -> dict[str, Any]:
    if not SCHEMA.exists():
        unavailable(f"{SCHEMA} is missing: run `npm ci` in tests/asyncapi_schema (setup does)")
    return json.loads(SCHEMA.read_text())  # type: ignore[no-any-return]


def transports() -> list[Any]:
    bus = InMemoryCommBus(instrument=False)
    return [
        RedisTransport(bus, "redis://:pw@cache.internal:6380/2", metrics=False),
        NatsTransport(bus, "nats://user:pw@nats.internal:4222", metrics=False),
        GrpcTransport(bus, "hub.internal:50051", metrics=False),
        RabbitMQTransport(bus, "amqps://app:pw@rabbit.internal/shop", prefix="shop", metrics=False),
        HttpFaceDescription("https://api.example/bus"),
    ]


def resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


@pytest.mark.parametrize("deployed", [True, False], ids=["transports", "in-process"])
def test_valid_against_the_official_schema(official: dict[str, Any], deployed: bool) -> None:
    doc = asyncapi_document(registry(), transports() if deployed else ())
    jsonschema.Draft7Validator(official).validate(doc)
    json.dumps(doc)  # JSON-safe
    for ref in refs(doc):
        assert ref.startswith("#/") and resolve(doc, ref) is not None, ref


def test_the_validation_catches_a_broken_document(official: dict[str, Any]) -> None:
    doc = asyncapi_document(registry(), transports())
    doc["operations"]["redis.publish.OrderPlaced.send"]["action"] = "publish"  # AsyncAPI 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(official).validate(doc)
    # the amqp bindings are checked too: a queue channel naming an exchange is refused
    doc = asyncapi_document(registry(), transports())
    doc["channels"]["amqps.send.ChargeCard"]["bindings"]["amqp"]["exchange"] = {"name": "x"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(official).validate(doc)


def test_servers_channels_and_bindings() -> None:
    doc = asyncapi_document(registry(), transports())
    assert doc["servers"] == {
        "redis": {
            "host": "cache.internal:6380",
            "protocol": "redis",
            "pathname": "/2",
            "description": "redis://***@cache.internal:6380/2",
        },
        "nats": {
            "host": "nats.internal:4222",
            "protocol": "nats",
            "description": "nats://***@nats.internal:4222",
        },
        "grpc": {
            "host": "hub.internal:50051",
            "protocol": "grpc",
            "description": "grpc://hub.internal:50051",
        },
        "amqps": {
            "host": "rabbit.internal:5671",
            "protocol": "amqps",
            "pathname": "/shop",
            "description": "RabbitMQ amqps://***@rabbit.internal/shop",
        },
        "https": {
            "host": "api.example",
            "protocol": "https",
            "pathname": "/bus",
            "description": "The bus's HTTP face (OpenAPI: /openapi.json).",
        },
    }
    assert "pw" not in json.dumps(doc)
    ch = doc["channels"]
    assert ch["redis.publish.OrderPlaced"]["address"] == "jeeves:evt:OrderPlaced"
    assert ch["redis.send.ChargeCard"]["address"] == "jeeves:cmd:ChargeCard"
    assert ch["redis.send.ChargeCard"]["bindings"]["redis"]["group"] == "handlers"
    assert ch["nats.query.GetBalance"]["address"] == "jeeves.qry.GetBalance"
    assert ch["nats.send.ChargeCard"]["bindings"]["nats"]["stream"] == "jeeves_commands"
    assert ch["https.query.GetBalance"]["address"] == "/v1/query/GetBalance"
    assert ch["grpc.send.ChargeCard"]["address"] == "send:ChargeCard"
    assert ch["nats.reply"]["address"] is None
    # an event is published only, a command sent only; a class without category: all three
    assert "redis.send.OrderPlaced" not in ch and "redis.publish.ChargeCard" not in ch
    assert {"redis.publish.Untyped", "redis.send.Untyped", "redis.query.Untyped"} <= set(ch)
    ops = doc["operations"]
    query = ops["nats.query.GetBalance.send"]
    assert query["bindings"] == {"nats": {"queue": "responders", "bindingVersion": "0.1.0"}}
    assert query["reply"]["address"]["location"] == "$message.header#/reply_to"
    assert ops["https.publish.OrderPlaced.send"]["bindings"]["http"]["method"] == "POST"
    assert ops["redis.publish.OrderPlaced.receive"]["action"] == "receive"


def test_payload_schemas_match_the_decoder() -> None:
    reg = registry()
    doc = asyncapi_document(reg)
    schemas = doc["components"]["schemas"]
    validator = jsonschema.Draft7Validator(
        {"$ref": "#/components/schemas/OrderPlaced", "components": {"schemas": schemas}}
    )
    good = {"order_id": "o", "lines": [1], "total": {"amount": 2.5, "currency": "USD"}}
    assert validator.is_valid(good)
    reg.from_payload("OrderPlaced", good)
    for bad in (
        {**good, "lines": [True]},
        {**good, "total": {"amount": 1, "currency": "GBP"}},
        {**good, "surprise": 1},
        {"order_id": "o"},
    ):
        assert not validator.is_valid(bad), bad
        with pytest.raises(Exception):  # noqa: B017 - WireError, whatever its reason
            reg.from_payload("OrderPlaced", bad)


def test_a_transport_without_the_hook_is_still_described() -> None:
    class Bare:
        system = "amqp"
        url = "amqp://guest:guest@rabbit:5672/"
        default_port = 5672

        def destination(self, pattern: str, message_type: str) -> str:
            return f"jeeves.{pattern}.{message_type}"

    doc = asyncapi_document(registry(), [Bare()], types=["ChargeCard"])
    assert doc["servers"]["amqp"]["host"] == "rabbit:5672"
    assert doc["channels"]["amqp.send.ChargeCard"]["address"] == "jeeves.send.ChargeCard"


def test_rabbitmq_channels_carry_the_real_names() -> None:
    doc = asyncapi_document(registry(), transports())
    ch, ops = doc["channels"], doc["operations"]
    event = ch["amqps.publish.OrderPlaced"]
    assert event["address"] == "OrderPlaced"  # the routing key on the events exchange
    assert event["servers"] == [{"$ref": "#/servers/amqps"}]
    assert event["bindings"]["amqp"] == {
        "is": "routingKey",
        "exchange": {
            "name": "shop.events",
            "type": "topic",
            "durable": True,
            "autoDelete": False,
            "vhost": "shop",
        },
        "bindingVersion": "0.3.0",
    }
    assert ops["amqps.publish.OrderPlaced.send"]["bindings"]["amqp"]["cc"] == ["OrderPlaced"]
    command = ch["amqps.send.ChargeCard"]
    assert command["address"] == "shop.cmd.ChargeCard"
    amqp = command["bindings"]["amqp"]
    assert amqp["is"] == "queue" and "exchange" not in amqp
    assert amqp["queue"]["name"] == "shop.cmd.ChargeCard" and amqp["queue"]["durable"] is True
    assert amqp["x-arguments"] == {"x-queue-type": "quorum"}
    assert amqp["x-dead-letter-exchange"] == "shop.dead"
    assert "at-least-once" in command["description"] and "shop.dead" in command["description"]
    send_op = ops["amqps.send.ChargeCard.receive"]["bindings"]["amqp"]
    assert send_op["deliveryMode"] == 2 and send_op["ack"] is True
    query = ch["amqps.query.GetBalance"]
    assert query["address"] == "shop.qry.GetBalance"
    assert query["bindings"]["amqp"]["queue"]["autoDelete"] is True
    assert "amq.rabbitmq.reply-to" in query["description"]
    assert ops["amqps.query.GetBalance.send"]["reply"]["channel"] == {
        "$ref": "#/channels/amqps.reply"
    }


def test_rabbitmq_dispatch_queues_are_priority_queues() -> None:
    from jeeves_control_tower.ipc.adapters.rabbitmq.contract import rabbitmq_channel
    from jeeves_control_tower.ipc.adapters.services import DISPATCH_PREFIX

    bus = InMemoryCommBus(instrument=False)
    transport = RabbitMQTransport(bus, "amqp://guest:guest@localhost:5672/", metrics=False)
    channel = rabbitmq_channel(transport, "query", DISPATCH_PREFIX + "billing")
    amqp = channel.channel_bindings["amqp"]
    assert amqp["x-arguments"] == {"x-max-priority": 9}
    assert amqp["queue"]["vhost"] == "/"
    assert transport.asyncapi_server().host == "localhost:5672"
    assert transport.asyncapi_server().pathname is None
