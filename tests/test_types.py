from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from jeeves_control_tower.types import (
    MAX_TAGS,
    DispatchTarget,
    Envelope,
    RequestContext,
    SchedulingPriority,
    ServiceDescriptor,
)


def ctx(**kw: object) -> RequestContext:
    base: dict[str, object] = {"request_id": "r1", "capability": "execute"}
    base.update(kw)
    return RequestContext(**base)  # type: ignore[arg-type]


class TestRequestContext:
    def test_frozen(self) -> None:
        c = ctx()
        with pytest.raises(AttributeError):
            c.request_id = "x"  # type: ignore[misc]

    @pytest.mark.parametrize("field", ["request_id", "capability"])
    @pytest.mark.parametrize("value", ["", "   ", None, 3])
    def test_required_non_empty(self, field: str, value: object) -> None:
        with pytest.raises(ValueError, match=field):
            ctx(**{field: value})

    def test_optional_must_be_strings(self) -> None:
        with pytest.raises(ValueError, match="session_id"):
            ctx(session_id=5)

    def test_tags_bounded_and_copied(self) -> None:
        tags = {"a": "b"}
        c = ctx(tags=tags)
        tags["c"] = "d"
        assert c.tags == {"a": "b"}
        with pytest.raises(ValueError, match="at most"):
            ctx(tags={str(i): "v" for i in range(MAX_TAGS + 1)})
        with pytest.raises(ValueError, match="strings"):
            ctx(tags={"a": 1})
        with pytest.raises(ValueError, match="characters"):
            ctx(tags={"a": "x" * 1000})


class TestEnvelope:
    def test_fills_ids_from_context(self) -> None:
        e = Envelope(request_context=ctx(session_id="s", user_id="u"))
        assert e.envelope_id and len(e.envelope_id) == 32
        assert (e.request_id, e.session_id, e.user_id) == ("r1", "s", "u")
        assert e.created_at.tzinfo is not None
        assert not e.terminated and e.completed_at is None

    def test_mismatch_is_value_error(self) -> None:
        with pytest.raises(ValueError, match="contradicts"):
            Envelope(request_context=ctx(), request_id="other")
        with pytest.raises(ValueError, match="session_id"):
            Envelope(request_context=ctx(session_id="s"), session_id="t")

    def test_context_required(self) -> None:
        with pytest.raises(ValueError, match="RequestContext"):
            Envelope(request_context={"request_id": "r"})  # type: ignore[arg-type]

    def test_round_trip_is_lossless_and_json_safe(self) -> None:
        e = Envelope(
            request_context=ctx(session_id="s", tags={"k": "v"}, trace_id="t" * 32),
            metadata={"a": [1, 2, {"b": None}]},
            outputs={"x": 1.5},
            errors=[{"e": "boom"}],
            processing_history=[{"attempt": 1}],
        )
        e.terminate("done")
        data = json.loads(json.dumps(e.to_dict()))
        back = Envelope.from_dict(data)
        assert back == e
        assert back.completed_at == e.completed_at

    def test_from_dict_rejects_bad_shapes(self) -> None:
        good = Envelope(request_context=ctx()).to_dict()
        for key, bad in [("metadata", []), ("errors", {}), ("created_at", 5)]:
            with pytest.raises(ValueError):
                Envelope.from_dict({**good, key: bad})
        with pytest.raises(ValueError):
            Envelope.from_dict("nope")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            Envelope.from_dict({**good, "request_context": {"request_id": ""}})

    def test_terminate(self) -> None:
        e = Envelope(request_context=ctx())
        before = datetime.now(UTC)
        e.terminate("why")
        assert e.terminated and e.termination_reason == "why"
        assert e.completed_at is not None and e.completed_at >= before


class TestServiceDescriptorAndTarget:
    def test_defaults_match_reference(self) -> None:
        d = ServiceDescriptor(name="s", service_type="flow")
        assert (
            d.version,
            d.capabilities,
            d.max_concurrent,
            d.current_load,
            d.healthy,
            d.metadata,
        ) == (
            "1.0.0",
            [],
            10,
            0,
            True,
            {},
        )
        t = DispatchTarget(service_name="s", method="run")
        assert (t.priority, t.timeout_seconds, t.retry_count, t.max_retries) == (
            SchedulingPriority.NORMAL,
            300,
            0,
            3,
        )

    @pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
    def test_capacity_validated(self, bad: object) -> None:
        with pytest.raises(ValueError, match="max_concurrent"):
            ServiceDescriptor(name="s", service_type="flow", max_concurrent=bad)  # type: ignore[arg-type]

    @pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "5", True])
    def test_timeout_validated(self, bad: object) -> None:
        with pytest.raises(ValueError, match="timeout_seconds"):
            DispatchTarget(service_name="s", method="m", timeout_seconds=bad)  # type: ignore[arg-type]

    def test_float_timeout_and_priority_strings(self) -> None:
        t = DispatchTarget(service_name="s", method="m", timeout_seconds=0.25, priority="high")  # type: ignore[arg-type]
        assert t.timeout_seconds == 0.25 and t.priority is SchedulingPriority.HIGH
        with pytest.raises(ValueError, match="priority"):
            DispatchTarget(service_name="s", method="m", priority="urgent")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_retries"):
            DispatchTarget(service_name="s", method="m", max_retries=-1)

    def test_priority_is_str_enum_in_order(self) -> None:
        assert [p.name for p in SchedulingPriority] == ["REALTIME", "HIGH", "NORMAL", "LOW", "IDLE"]
        assert isinstance(SchedulingPriority.HIGH, str)
        assert [p.rank for p in SchedulingPriority] == [0, 1, 2, 3, 4]
