"""current_span answers as the API's get_current_span does, in every case, by its own key
lookup or, when the key cannot be found through the public API, by the API itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext

from jeeves_control_tower.observability import _context
from jeeves_control_tower.observability._context import current_span, recording_trace_id


class NotASpan:
    """Something a caller put under the span's key that is no span."""

    def is_recording(self) -> bool:
        return True


def contexts() -> Iterator[tuple[str, Context]]:
    """(what, a context) for each case the lookup meets."""
    sampled = TracerProvider(sampler=ALWAYS_ON).get_tracer("t").start_span("s")
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("t").start_span("s")
    remote = NonRecordingSpan(SpanContext(1, 2, True))
    yield "empty", Context()
    yield "sampled", trace.set_span_in_context(sampled)
    yield "unsampled", trace.set_span_in_context(unsampled)
    yield "remote parent", trace.set_span_in_context(remote)
    yield "invalid span", trace.set_span_in_context(INVALID_SPAN)
    yield "other keys only", otel_context.set_value("k", 1, Context())
    key = next(iter(trace.set_span_in_context(INVALID_SPAN, Context())))
    yield "not a span", otel_context.set_value(key, NotASpan(), Context())
    yield "None under the key", otel_context.set_value(key, None, Context())


@pytest.fixture(params=["own lookup", "the API's"])
def lookup(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "the API's":
        monkeypatch.setattr(_context, "_SPAN_KEY", None)
    else:
        assert _context._SPAN_KEY is not None  # found on this API
    return str(request.param)


def test_the_key_is_found_through_the_public_api() -> None:
    assert _context._span_key() == _context._SPAN_KEY is not None


@pytest.mark.usefixtures("lookup")
def test_answers_as_get_current_span_does() -> None:
    for what, ctx in contexts():
        assert current_span(ctx) is trace.get_current_span(ctx), what
        token = otel_context.attach(ctx)
        try:
            assert current_span() is trace.get_current_span(), what
            expected = trace.get_current_span()
            want = expected.get_span_context().trace_id if expected.is_recording() else 0
            assert recording_trace_id() == want, what
        finally:
            otel_context.detach(token)


def test_a_value_that_is_no_span_stays_no_span_after_real_spans_were_seen() -> None:
    span = TracerProvider().get_tracer("t").start_span("s")
    assert current_span(trace.set_span_in_context(span)) is span  # its class is known now
    key = _context._SPAN_KEY
    assert key is not None
    assert current_span(otel_context.set_value(key, NotASpan(), Context())) is INVALID_SPAN
    assert NotASpan not in _context._SPAN_CLASSES


def test_a_proxy_that_reports_another_class_does_not_make_that_class_a_span() -> None:
    """A Span subclass whose ``__class__`` says ``Plain``: it is a span; a ``Plain`` after
    it is still none."""

    class Plain:
        pass

    class Disguised(NonRecordingSpan):
        @property  # type: ignore[misc]
        def __class__(self) -> type:
            return Plain

    key = _context._SPAN_KEY
    assert key is not None
    disguised = Disguised(SpanContext(1, 2, False))
    assert current_span(trace.set_span_in_context(disguised)) is disguised
    plain = otel_context.set_value(key, Plain(), Context())
    assert current_span(plain) is INVALID_SPAN is trace.get_current_span(plain)


def test_an_api_that_stores_the_span_otherwise_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """One key, but the span kept in a holder: the round trip at import finds the API's
    lookup reads something else, so the API's own function answers."""
    real = trace.set_span_in_context

    class Holder:
        def __init__(self, span: object) -> None:
            self.span = span

    def held(span: object, context: Context | None = None) -> Context:
        return otel_context.set_value("current-span-held", Holder(span), context or Context())

    monkeypatch.setattr(trace, "set_span_in_context", held)
    assert _context._span_key() is None
    monkeypatch.setattr(trace, "set_span_in_context", real)
    assert _context._span_key() == _context._SPAN_KEY


def test_an_api_whose_context_has_no_single_key_falls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def two_keys(span: object, context: Context | None = None) -> Context:
        return Context({"a": span, "b": span})

    monkeypatch.setattr(trace, "set_span_in_context", two_keys)
    assert _context._span_key() is None

    def raises(span: object, context: Context | None = None) -> Context:
        raise RuntimeError("no")

    monkeypatch.setattr(trace, "set_span_in_context", raises)
    assert _context._span_key() is None
