"""The per-event paths of the wire codec: ``encode_event`` writes the frame ``encode``
writes (read back equal), and a simple message class's quick decode judges a payload as
the full check does."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from jeeves_control_tower.ipc import DynamicEvent
from jeeves_control_tower.ipc.adapters import MessageRegistry, WireCodec, WireError

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass
class Flat:
    n: int
    s: str
    category: str = field(default="event", init=False)


@dataclass
class Loose:
    n: int
    anything: Any = None
    category: str = field(default="event", init=False)


class Unregistered:
    category = "event"


def make_codec(**kw: Any) -> WireCodec:
    registry = MessageRegistry()
    for cls in (Flat, Loose, DynamicEvent):
        registry.register(cls)
    return WireCodec(registry, **kw)


CASES = [
    (Flat(1, "a"), None, None),
    (Flat(2, 'é " \\ \n'), {"traceparent": TP}, None),
    (Flat(3, "\ud800"), None, None),  # a lone surrogate: orjson refuses, the stdlib writes it
    (Loose(3, {"nested": [1, 2.5, None]}), None, None),  # not flat: encode's own path
    (Loose(4, float("nan")), None, None),  # NaN: refused by both
    (Loose(5, uuid.UUID(int=5)), None, None),  # a UUID: refused by both
    (DynamicEvent("order.placed", {"x": 1}), None, "order.placed"),  # class != type
]


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize(("message", "headers", "mtype"), CASES)
def test_encode_event_writes_what_encode_writes(
    fmt: str, fast: bool, message: Any, headers: dict[str, str] | None, mtype: str | None
) -> None:
    codec = make_codec(format=fmt, fast=fast)
    message_type = mtype or type(message).__name__
    try:
        expected = codec.decode(
            codec.encode(
                message,
                pattern="publish",
                message_id="m1_7",
                headers=headers,
                message_type=message_type,
            )
        )
    except WireError as exc:
        with pytest.raises(WireError) as raised:
            codec.encode_event(message, "m1_7", message_type, headers)
        assert raised.value.reason == exc.reason
        return
    for _ in range(2):  # the second time from the cached start of the frame
        data = codec.encode_event(message, "m1_7", message_type, headers)
        assert repr(codec.decode(data)) == repr(expected)  # repr: NaN != NaN


def test_encode_event_frames_are_json_objects_with_every_field() -> None:
    codec = make_codec()
    data = codec.encode_event(Flat(1, "a"), "m1_7", "Flat", {"traceparent": TP})
    assert json.loads(data) == {
        "v": 1,
        "id": "m1_7",
        "type": "Flat",
        "pattern": "publish",
        "headers": {"traceparent": TP},
        "payload": {"n": 1, "s": "a"},
    }
    assert json.loads(codec.encode_batch([data, data]))["batch"][1]["id"] == "m1_7"


def test_encode_event_keeps_every_refusal() -> None:
    codec = make_codec(max_frame_bytes=1024)
    with pytest.raises(WireError) as raised:
        codec.encode_event(Unregistered(), "m1", "Unregistered", None)
    assert raised.value.reason == "unknown_type"
    codec.encode_event(Flat(1, "a"), "m1", "Flat", None)  # caches the start of Flat frames
    with pytest.raises(WireError) as raised:
        codec.encode_event(Flat(1, "x" * 2000), "m2", "Flat", None)
    assert raised.value.reason == "oversized"


def test_encode_event_writes_a_class_registered_after_its_first_refusal() -> None:
    registry = MessageRegistry()
    codec = WireCodec(registry)
    with pytest.raises(WireError):
        codec.encode_event(Flat(1, "a"), "m1", "Flat", None)
    registry.register(Flat, name="FlatV2")
    frame = json.loads(codec.encode_event(Flat(2, "b"), "m2", "Flat", None))
    assert (frame["class"], frame["type"], frame["payload"]) == (
        "FlatV2",
        "Flat",
        {"n": 2, "s": "b"},
    )


@pytest.mark.parametrize(
    "payload",
    [
        {"n": 1, "x": "a"},  # as many keys as fields, one of them unknown
        {"s": "a", "x": 1},
        {"n": 1, "s": 2},  # a wrong type
        {"n": True, "s": "a"},
        {"n": 1},  # a field missing
        {"n": 1, "s": "a", "x": None},  # one key too many
    ],
)
def test_a_simple_class_rejects_what_the_full_check_rejects(payload: dict[str, Any]) -> None:
    codec = make_codec()
    data = json.dumps(
        {"v": 1, "id": "m1", "type": "Flat", "pattern": "publish", "payload": payload}
    ).encode()
    with pytest.raises(WireError) as raised:
        codec.decode(data)
    assert raised.value.reason == "bad_field"


def test_a_class_with_an_untyped_field_checks_every_key() -> None:
    codec = make_codec()
    ok = {"v": 1, "id": "m1", "type": "Loose", "pattern": "publish"}
    frame = codec.decode(json.dumps({**ok, "payload": {"n": 1, "anything": [1]}}).encode())
    assert frame.message == Loose(1, [1])
    with pytest.raises(WireError) as raised:
        codec.decode(json.dumps({**ok, "payload": {"n": 1, "other": [1]}}).encode())
    assert raised.value.reason == "bad_field"
