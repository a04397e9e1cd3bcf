from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import DynamicEvent, DynamicQuery
from jeeves_control_tower.ipc.adapters import MessageRegistry, WireCodec, WireError
from jeeves_control_tower.ipc.adapters.metrics import AdapterMetrics
from jeeves_control_tower.ipc.adapters.wire.codec import Frame, Reply
from jeeves_control_tower.testing.messages import REGISTRY, Answer, Level, Point, Rich
from jeeves_control_tower.types import Envelope, RequestContext

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass
class Strict:
    n: int
    ratio: float
    flag: bool
    mode: Literal["a", "b"]
    items: tuple[int, ...] = ()
    extra: Any = None
    category: str = field(default="command", init=False)


def codec(reg: CollectorRegistry | None = None, **kw: Any) -> WireCodec:
    registry = MessageRegistry()
    for cls in (Rich, Answer, Point, Strict):
        registry.register(cls)
    metrics = AdapterMetrics("test", reg or CollectorRegistry())
    return WireCodec(registry, on_reject=metrics.rejected, **kw)


def frame(**over: Any) -> bytes:
    base: dict[str, Any] = {
        "v": 1,
        "id": "m1",
        "type": "Strict",
        "pattern": "send",
        "payload": {"n": 1, "ratio": 0.5, "flag": True, "mode": "a"},
    }
    base.update(over)
    return json.dumps(base).encode()


def rejected(reg: CollectorRegistry, reason: str) -> float:
    value = reg.get_sample_value(
        "commbus_wire_rejected_total", {"transport": "test", "reason": reason}
    )
    return value or 0.0


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_round_trip_of_nested_typed_message(fmt: str) -> None:
    c = codec(format=fmt)
    msg = Rich(Point(1, 2), Level.HIGH, ["a", "b"], {"x": 1.5, "y": 2}, maybe=None)
    data = c.encode(msg, pattern="query", message_id="m1", headers={"traceparent": TP})
    out = c.decode(data)
    assert out.message == Rich(Point(1, 2), Level.HIGH, ["a", "b"], {"x": 1.5, "y": 2.0})
    assert isinstance(out.message.level, Level)
    assert (out.id, out.type, out.pattern, out.headers) == (
        "m1",
        "Rich",
        "query",
        {"traceparent": TP},
    )


def test_dynamic_messages_and_envelopes_round_trip() -> None:
    c = codec()
    event = DynamicEvent("order.created", {"id": 1, "items": [1, 2]})
    out = c.decode(c.encode(event, pattern="publish", message_id="e"))
    assert out.type == "order.created" and out.message == event
    query = DynamicQuery("order.total", {"a": [1]}, service_name="orders")
    assert c.decode(c.encode(query, pattern="query", message_id="q")).message == query
    env = Envelope(RequestContext(request_id="r1", capability="cap", tags={"k": "v"}))
    reply = c.decode_reply(c.encode_reply("c1", result=env))
    assert reply.ok and reply.result == env


def test_tuple_literal_and_float_fields_are_checked() -> None:
    c = codec()
    out = c.decode(frame(payload={"n": 1, "ratio": 2, "flag": False, "mode": "b", "items": [1]}))
    assert out.message == Strict(1, 2.0, False, "b", (1,))
    assert isinstance(out.message.ratio, float)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "malformed"),
        (b"[1, 2]", "malformed"),
        (b'{"v": 1, "id": "x", "type": "Strict", "pattern": "send", "payload": NaN}', "malformed"),
        (frame(v=2), "bad_version"),
        (frame(v=True), "bad_version"),
        (frame(id=""), "malformed"),
        (frame(id=7), "malformed"),
        (frame(pattern="broadcast"), "malformed"),
        (frame(pattern="query", ttl=-1), "malformed"),
        (frame(pattern="query", corr=""), "malformed"),
        (frame(type="Nope"), "unknown_type"),
        (frame(type="Strict", **{"class": "os.system"}), "unknown_type"),
        (frame(payload=[1]), "malformed"),
        (frame(payload={"n": 1, "ratio": 0.5, "flag": True}), "bad_field"),
        (frame(payload={"n": "1", "ratio": 0.5, "flag": True, "mode": "a"}), "bad_field"),
        (frame(payload={"n": True, "ratio": 0.5, "flag": True, "mode": "a"}), "bad_field"),
        (frame(payload={"n": 1, "ratio": 0.5, "flag": True, "mode": "c"}), "bad_field"),
        (frame(payload={"n": 1, "ratio": 0.5, "flag": True, "mode": "a", "x": 1}), "bad_field"),
        (
            frame(payload={"n": 1, "ratio": 0.5, "flag": True, "mode": "a", "items": "ab"}),
            "bad_field",
        ),
        (frame(headers={"a": 1}), "bad_headers"),
        (frame(headers=["traceparent"]), "bad_headers"),
        (frame(headers={f"h{i}": "v" for i in range(100)}), "bad_headers"),
        (
            frame(type="Answer", payload={"value": 1, "source": "s"}, **{"class": "Point"}),
            "bad_field",
        ),
    ],
)
def test_bad_frames_are_rejected_with_a_reason_and_counted(data: bytes, reason: str) -> None:
    reg = CollectorRegistry()
    c = codec(reg)
    with pytest.raises(WireError) as info:
        c.decode(data)
    assert info.value.reason == reason
    assert rejected(reg, reason) == 1.0


def test_type_mismatch_between_frame_and_payload() -> None:
    reg = CollectorRegistry()
    c = codec(reg)
    data = frame(
        type="Other", payload={"message_type": "Else", "payload": {}}, **{"class": "DynamicEvent"}
    )
    with pytest.raises(WireError) as info:
        c.decode(data)
    assert info.value.reason == "type_mismatch"


@dataclass
class Routed:
    message_type: str
    n: int = 0


class Renamed:
    pass


@pytest.mark.parametrize(
    ("name", "cls", "payload"),
    [
        ("Routed", Routed, {"message_type": "Audit"}),  # the class routes by a field
        ("DynamicEvent", DynamicEvent, {"message_type": "Audit", "payload": {}}),
        ("Shown", dataclass(type("Hidden", (), {"__annotations__": {"n": int}})), {"n": 1}),
    ],
)
def test_a_message_must_route_as_its_frame_says_even_without_a_class(
    name: str, cls: type, payload: dict[str, Any]
) -> None:
    """A frame without "class" builds the class registered under its type; if that
    message would route elsewhere (to Audit's handlers), the frame is refused."""
    registry = MessageRegistry(builtins=False)
    registry.register(cls, name)
    reg = CollectorRegistry()
    c = WireCodec(registry, on_reject=AdapterMetrics("test", reg).rejected)
    with pytest.raises(WireError) as info:
        c.decode(frame(type=name, payload=payload))
    assert info.value.reason == "type_mismatch"
    assert rejected(reg, "type_mismatch") == 1
    ok = {"v": 1, "id": "m2", "type": name, "pattern": "publish", "payload": payload}
    if name == "Routed":  # a routing field that agrees with the frame is fine
        ok["payload"] = {"message_type": "Routed"}
        assert c.decode(json.dumps(ok).encode()).message == Routed("Routed")


def test_oversized_and_deep_frames() -> None:
    reg = CollectorRegistry()
    c = codec(reg, max_frame_bytes=2048, max_depth=8)
    big = frame(payload={"n": 1, "ratio": 0.5, "flag": True, "mode": "a", "extra": "x" * 4000})
    with pytest.raises(WireError, match="oversized"):
        c.decode(big)
    deep: Any = 1
    for _ in range(20):
        deep = [deep]
    with pytest.raises(WireError) as info:
        c.decode(frame(payload={"n": 1, "ratio": 0.5, "flag": True, "mode": "a", "extra": deep}))
    assert info.value.reason == "too_deep"
    very_deep = b'{"v":1,"payload":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(WireError) as info:
        codec(reg, max_frame_bytes=1 << 20).decode(very_deep)
    assert info.value.reason in ("too_deep", "malformed")
    assert rejected(reg, "oversized") == 1.0


def test_encoding_problems_raise_wire_errors() -> None:
    c = codec(max_frame_bytes=1024)
    with pytest.raises(WireError, match="unknown_type"):
        c.encode(object(), pattern="publish", message_id="x")
    with pytest.raises(WireError, match="unencodable"):
        c.encode(Strict(1, math.nan, True, "a"), pattern="send", message_id="x")
    with pytest.raises(WireError, match="unencodable"):
        c.encode(Strict(1, 0.5, True, "a", extra=object()), pattern="send", message_id="x")
    with pytest.raises(WireError, match="oversized"):
        c.encode(Strict(1, 0.5, True, "a", extra="x" * 2000), pattern="send", message_id="x")


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_what_a_receiver_would_refuse_as_too_deep_is_not_encoded(fmt: str) -> None:
    # The frame is the first level and the payload the second: "extra" nested so that the
    # frame is exactly max_depth deep travels; one level more is refused to the sender,
    # as a receiver with the same max_depth would refuse it.
    c = codec(max_depth=8, format=fmt)

    def nested(levels: int) -> Any:
        value: Any = 1
        for _ in range(levels):
            value = [value]
        return value

    fits = Strict(1, 0.5, True, "a", extra=nested(6))
    data = c.encode(fits, pattern="send", message_id="x")
    assert c.decode(data).message == fits
    with pytest.raises(WireError) as info:
        c.encode(Strict(1, 0.5, True, "a", extra=nested(7)), pattern="send", message_id="x")
    assert info.value.reason == "too_deep" and "max_depth=8" in info.value.detail
    as_tuples: Any = 1
    for _ in range(7):  # written as arrays too, so they count
        as_tuples = (as_tuples,)
    with pytest.raises(WireError, match="too_deep"):
        c.encode(Strict(1, 0.5, True, "a", extra=as_tuples), pattern="send", message_id="x")
    with pytest.raises(WireError, match="too_deep"):  # the event path as well
        c.encode_event(Strict(1, 0.5, True, "a", extra=nested(7)), "e", "Strict", None)
    reply = c.decode_reply(c.encode_reply("c", result={"deep": nested(20)}))
    assert reply.ok is False and reply.kind == "error" and "max_depth=8" in reply.message


def test_invalid_traceparent_is_dropped_but_the_message_delivered() -> None:
    reg = CollectorRegistry()
    c = codec(reg)
    for bad in ("00-" + "0" * 32 + "-b7ad6b7169203331-01", "garbage", "ff-" + TP[3:]):
        out = c.decode(frame(headers={"traceparent": bad, "tracestate": "a=b", "x": "y"}))
        assert out.headers == {"x": "y"}
        assert out.message.n == 1
    assert rejected(reg, "bad_traceparent") == 3.0


def test_replies_carry_results_and_errors() -> None:
    c = codec()
    assert c.decode_reply(c.encode_reply("c", result={"a": [1]})).result == {"a": [1]}
    assert c.decode_reply(c.encode_reply("c", result=Answer(1, "s"))).result == Answer(1, "s")
    err = c.decode_reply(c.encode_reply("c", kind="error", error=KeyError("k")))
    assert (err.ok, err.kind, err.error_type) == (False, "error", "KeyError")
    unencodable = c.decode_reply(c.encode_reply("c", result=object()))
    assert not unencodable.ok and unencodable.error_type == "WireError"
    with pytest.raises(WireError):
        c.decode_reply(b'{"v": 1, "ok": "yes"}')


def test_registry_rules() -> None:
    registry = MessageRegistry()
    registry.register(Point)
    registry.register(Point)  # idempotent
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Answer, "Point")
    with pytest.raises(TypeError, match="not a dataclass"):
        registry.register(int)
    with pytest.raises(ValueError, match="both"):
        registry.register(int, to_dict=lambda x: {})
    assert "DynamicEvent" in registry.names()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


# Another test's leftover thread that uses the global `random` (a demo workload, say)
# makes Hypothesis think these strategies do; that must not fail the fuzzing.
FUZZ_WARNINGS = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")


@FUZZ_WARNINGS
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_only_ever_raise_wire_errors(data: bytes) -> None:
    assert_checked(codec().decode, data)


@FUZZ_WARNINGS
@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "v": st.sampled_from([1, 2, "1"]) | json_values,
            "id": st.text(max_size=3) | json_values,
            "type": st.sampled_from(["Strict", "Rich", "DynamicEvent", "Point"]) | json_values,
            "class": st.sampled_from(["DynamicEvent", "Answer"]) | json_values,
            "pattern": st.sampled_from(["publish", "send", "query"]) | json_values,
            "headers": st.dictionaries(st.text(max_size=12), st.text(max_size=60)) | json_values,
            "payload": json_values,
            "ttl": json_values,
            "reply_to": json_values,
        },
    )
)
def test_fuzz_structured_frames_only_ever_raise_wire_errors(obj: dict[str, Any]) -> None:
    c = codec()
    for fmt_codec in (c, codec(format="msgpack")):
        data = json.dumps(obj).encode() if fmt_codec is c else _msgpack(obj)
        assert_checked(fmt_codec.decode, data)
        assert_checked(fmt_codec.decode_reply, data)


def assert_checked(decode: Any, data: bytes) -> None:
    """Decoding raises nothing but a WireError, and never through the codec's safety net
    for exceptions its checks missed."""
    try:
        decode(data)
    except WireError as exc:
        assert not exc.detail.startswith("unchecked"), exc.detail


def _msgpack(obj: Any) -> bytes:
    import msgpack  # type: ignore[import-untyped]

    out: bytes = msgpack.packb(obj)
    return out


def test_registry_used_by_default_round_trips() -> None:
    c = WireCodec(REGISTRY)
    out = c.decode(c.encode(Answer(1, "x"), pattern="send", message_id="m"))
    assert out.message == Answer(1, "x")


class RecordingRegistry(CollectorRegistry):
    """A registry that keeps what is registered in it (through its public ``register``)."""

    def __init__(self) -> None:
        super().__init__()
        self.registered: list[Any] = []

    def register(self, collector: Any) -> None:
        super().register(collector)
        self.registered.append(collector)

    def family(self, name: str) -> Any:
        """The registered collector that describes the metric ``name``."""
        (found,) = [c for c in self.registered if name in {m.name for m in c.describe()}]
        return found


class Raising:
    """A child whose increment fails (a broken registry)."""

    def inc(self, n: float = 1) -> None:
        raise RuntimeError("registry gone")


def test_wire_counter_binds_each_child_once_and_never_raises() -> None:
    from jeeves_control_tower.ipc.adapters.metrics import RECEIVED, SENT

    reg = RecordingRegistry()
    m = AdapterMetrics("redis", reg)
    family = reg.family("commbus_wire_messages")
    calls: list[tuple[str, ...]] = []
    real_labels = family.labels

    def counting_labels(*values: str) -> Any:
        calls.append(values)
        return real_labels(*values)

    family.labels = counting_labels
    for _ in range(3):
        m.wire(SENT, "publish")
        m.wire(RECEIVED, "reply")
    count = m.wire_counter(SENT, "publish")
    assert count is not None
    count()
    # One labels() per (direction, pattern), however many frames are counted.
    assert calls == [("redis", SENT, "publish"), ("redis", RECEIVED, "reply")]
    labels = {"transport": "redis", "direction": "sent", "pattern": "publish"}
    assert reg.get_sample_value("commbus_wire_messages_total", labels) == 4

    def broken(*values: str) -> Any:
        raise RuntimeError("registry gone")

    family.labels = broken
    m.wire(SENT, "query")  # binding fails: counted nowhere, no exception
    assert m.wire_counter(SENT, "send") is None  # nothing bound: nothing to call
    family.labels = lambda *values: Raising()
    m.wire(SENT, "reply")  # a raising child: no exception either
    m.wire(RECEIVED, "send", 3)
    raising = m.wire_counter(RECEIVED, "query")
    assert raising is not None
    raising()  # ... nor from the hot-path counter
    assert (
        reg.get_sample_value("commbus_wire_messages_total", {**labels, "pattern": "query"}) is None
    )
    assert AdapterMetrics("redis", enabled=False).wire_counter(SENT, "publish") is None
    AdapterMetrics("redis", enabled=False).wire(SENT, "publish")


# ---------------------------------------------------------------------- batch frames


def event(n: int, **over: Any) -> bytes:
    return frame(id=f"e{n}", type="Point", pattern="publish", payload={"x": n, "y": 0}, **over)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("count", [1, 2, 15, 16, 300])
def test_a_batch_frame_carries_events_in_order(fmt: str, count: int) -> None:
    c = codec(format=fmt)
    frames = [
        c.encode(Point(i, -i), pattern="publish", message_id=f"e{i}", headers={"traceparent": TP})
        for i in range(count)
    ]
    batch = c.encode_batch(frames)
    out = c.decode_events(batch)
    assert all(isinstance(f, Frame) for f in out)
    got = [(f.id, f.message, f.headers) for f in out if isinstance(f, Frame)]
    assert got == [(f"e{i}", Point(i, -i), {"traceparent": TP}) for i in range(count)]
    assert c.decode_events(frames[0]) == [c.decode(frames[0])]  # a lone frame is unwrapped


def test_a_bad_frame_in_a_batch_is_rejected_alone_and_counted() -> None:
    reg = CollectorRegistry()
    c = codec(reg)
    bad = [
        frame(id="x1", type="Point", pattern="publish", payload={"x": "no", "y": 0}),
        b'"not an object"',
        frame(v=2, id="x3", type="Point", pattern="publish", payload={"x": 1, "y": 0}),
    ]
    out = c.decode_events(c.encode_batch([event(0), *bad, event(4)]))
    kinds = [type(x).__name__ for x in out]
    assert kinds == ["Frame", "WireError", "WireError", "WireError", "Frame"]
    assert [x.reason for x in out if isinstance(x, WireError)] == [
        "bad_field",
        "malformed",
        "bad_version",
    ]
    assert rejected(reg, "bad_field") == rejected(reg, "bad_version") == 1.0


@pytest.mark.parametrize(
    "data",
    [
        b'{"v":1,"batch":[]}',
        b'{"v":1,"batch":{}}',
        b'{"v":1,"batch":null}',
        b'{"v":1,"batch":[1],"x":2}',
        b'{"v":2,"batch":[]}',
        b'{"v":1,"batch":[' + b",".join([b"1"] * 4097) + b"]}",
        b'{"v":1,"batch":[' + b"[" * 5000 + b"]" * 5000 + b"]}",
    ],
)
def test_a_malformed_batch_is_one_error(data: bytes) -> None:
    reg = CollectorRegistry()
    out = codec(reg).decode_events(data)
    assert len(out) == 1 and isinstance(out[0], WireError)
    assert out[0].reason in ("malformed", "bad_version", "too_deep")
    assert not out[0].detail.startswith("unchecked")


def test_max_depth_applies_to_each_frame_of_a_batch() -> None:
    c = codec(max_depth=4)
    ok: Any = [[1]]  # frame -> payload -> list -> list: depth 4
    deep: Any = [[[1]]]
    frames = [
        frame(id=f"d{i}", type="Strict", pattern="publish", payload=p)
        for i, p in enumerate(
            [
                {"n": 1, "ratio": 0.5, "flag": True, "mode": "a", "extra": ok},
                {"n": 1, "ratio": 0.5, "flag": True, "mode": "a", "extra": deep},
            ]
        )
    ]
    single = [c.decode_events(f)[0] for f in frames]
    batched = c.decode_events(c.encode_batch(frames))
    for alone, inside in zip(single, batched, strict=True):  # the same verdict either way
        assert type(alone) is type(inside)
    assert isinstance(batched[1], WireError) and batched[1].reason == "too_deep"


def test_commands_and_queries_never_come_in_batches() -> None:
    c = codec()
    with pytest.raises(WireError, match="batch frame carries events only"):
        c.decode(c.encode_batch([frame(), frame()]))


@FUZZ_WARNINGS
@settings(max_examples=200, deadline=None)
@given(st.lists(json_values, max_size=5))
def test_fuzz_batches_only_ever_yield_frames_or_wire_errors(items: list[Any]) -> None:
    c = codec()
    for data in (
        c.encode_batch([json.dumps(x).encode() for x in items] or [b"1"]),
        json.dumps({"v": 1, "batch": items}).encode(),
    ):
        for item in c.decode_events(data):
            assert isinstance(item, Frame | WireError)
            if isinstance(item, WireError):
                assert not item.detail.startswith("unchecked"), item.detail


@dataclass(slots=True)
class Slotted:
    n: int
    tag: str = "t"
    category: str = field(default="event", init=False)


@dataclass
class WithFactory:
    n: int
    items: list[int] = field(default_factory=list)
    seen: list[str] = field(default_factory=list, init=False)
    category: str = field(default="event", init=False)


def test_payloads_hold_the_init_fields_only_whatever_the_instance_carries() -> None:
    registry = MessageRegistry()
    for cls in (Slotted, WithFactory, Point):
        registry.register(cls)
    c = WireCodec(registry)
    plain = WithFactory(1, [2])
    plain.seen.append("x")  # an init=False field with a value
    extra = WithFactory(3)
    extra.note = "not a field"  # type: ignore[attr-defined]  # an attribute of the instance only
    for message in (plain, extra, Slotted(4), Point(5, 6)):
        data = c.encode(message, pattern="publish", message_id="m")
        sent = json.loads(data)["payload"]
        names = [f.name for f in dataclasses.fields(message) if f.init]
        assert sorted(sent) == sorted(names)
        decoded = c.decode(data).message
        assert [getattr(decoded, n) for n in names] == [getattr(message, n) for n in names]


def test_a_payload_without_an_optional_field_gets_its_default() -> None:
    registry = MessageRegistry()
    registry.register(WithFactory)
    c = WireCodec(registry)
    data = json.dumps(
        {"v": 1, "id": "m", "type": "WithFactory", "pattern": "send", "payload": {"n": 1}}
    ).encode()
    assert c.decode(data).message == WithFactory(1)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize(
    "value", [1, "é", None, 2.5, True, {"a": 1, "b": None}, [1, 2], {"x": [1.5]}]
)
def test_reply_results_round_trip_and_what_json_cannot_carry_is_an_error(
    fmt: str, value: Any
) -> None:
    c = codec(format=fmt)
    assert c.decode_reply(c.encode_reply(None, result=value)) == Reply(None, True, value)
    assert c.decode_reply(c.encode_reply("c1", result=value)).corr == "c1"
    if fmt == "json":  # (MessagePack has no integers beyond 64 bits)
        assert c.decode_reply(c.encode_reply(None, result=2**70)).result == 2**70
        for bad in (math.nan, {"a": math.inf}, [-math.inf]):
            reply = c.decode_reply(c.encode_reply(None, result=bad))
            assert not reply.ok and reply.kind == "error" and "unencodable" in reply.message


@dataclass
class TreeNode:
    """A message class that refers to itself."""

    name: str
    children: list[TreeNode] = field(default_factory=list)


@dataclass
class Husband:
    name: str
    wife: Wife | None = None


@dataclass
class Wife:
    name: str
    husband: Husband | None = None


def test_classes_that_refer_to_themselves_or_each_other_are_checked_at_every_depth(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import typing

    resolved: list[type] = []
    real = typing.get_type_hints

    def counting(obj: Any, *args: Any, **kwargs: Any) -> Any:
        resolved.append(obj)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(typing, "get_type_hints", counting)
    reg = MessageRegistry()
    reg.register(TreeNode)
    reg.register(Husband)
    # Registration resolves each class once; nested decoders are built on first use (it
    # used to recurse until the interpreter's limit and then quietly stop checking).
    assert resolved.count(TreeNode) == 1 and resolved.count(Husband) == 1
    c = WireCodec(registry=reg)
    tree = TreeNode("a", [TreeNode("b", [TreeNode("c", [TreeNode("d")])]), TreeNode("e")])
    out = c.decode(c.encode(tree, pattern="publish", message_id="t"))
    assert out.message == tree and isinstance(out.message.children[0].children[0], TreeNode)
    couple = Husband("h", Wife("w", Husband("h2")))
    assert c.decode(c.encode(couple, pattern="publish", message_id="h")).message == couple
    bad = c.encode(tree, pattern="publish", message_id="t2").replace(b'"d"', b"7")
    with pytest.raises(WireError, match="bad_field"):
        c.decode(bad)
    assert resolved.count(TreeNode) == 2  # the nested decoder: built once, kept, shared
