"""HttpService against real local HTTP servers: the JSON contract, the status mapping,
retries, Retry-After, the deadline, bounds, admission and telemetry."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from jeeves_control_tower.ipc import CommBusCoordinator
from jeeves_control_tower.ipc.adapters.http import HttpPool, HttpService, HttpServiceError
from jeeves_control_tower.types import DispatchTarget, Envelope, RequestContext, ServiceDescriptor
from tests.ipc.adapters.http.servers import RawServer, Request, raw, uvicorn_app


def env() -> Envelope:
    return Envelope(request_context=RequestContext(request_id="r1", capability="execute"))


@pytest.fixture
async def pool() -> AsyncIterator[HttpPool]:
    p = HttpPool(max_connections=4)
    yield p
    await p.aclose()


def service(url: str, pool: HttpPool, **kw: Any) -> HttpService:
    kw.setdefault("metrics", False)
    return HttpService(url, pool=pool, **kw)


def setup(coordinator: CommBusCoordinator, handler: Any, max_concurrent: int = 10) -> None:
    coordinator.register_service(
        ServiceDescriptor(name="billing", service_type="worker", max_concurrent=max_concurrent)
    )
    coordinator.register_handler("billing", handler)


def target(**kw: Any) -> DispatchTarget:
    kw.setdefault("timeout_seconds", 5)
    return DispatchTarget(service_name="billing", method="charge", **kw)


class Recorder:
    """A Starlette dispatch endpoint: records requests, answers per a script."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.seen: list[tuple[dict[str, str], Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def endpoint(self, request: StarletteRequest) -> Response:
        self.seen.append((dict(request.headers), json.loads(await request.body())))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
            if not isinstance(answer, Response):
                answer = await answer(self.seen[-1][1])
            return answer  # type: ignore[no-any-return]
        finally:
            self.in_flight -= 1

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/dispatch", self.endpoint, methods=["POST"])])


async def echo_outputs(body: Any) -> Response:
    return JSONResponse({"envelope_id": body["envelope"]["envelope_id"], "outputs": {"paid": 3}})


async def test_normal_answer_updates_the_envelope_and_sends_the_contract(
    coordinator: CommBusCoordinator, pool: HttpPool
) -> None:
    rec = Recorder(echo_outputs)
    async with uvicorn_app(rec.app()) as base:
        setup(coordinator, service(f"{base}/dispatch", pool, token="s3cret", headers={"X-A": "1"}))
        e = env()
        out = await coordinator.dispatch(target(timeout_seconds=4), e)
    assert not out.terminated
    assert out.outputs == {"paid": 3}
    headers, body = rec.seen[0]
    assert body["target"] == {
        "service_name": "billing",
        "method": "charge",
        "priority": "normal",
        "attempt": 1,
        "max_retries": 3,
    }
    assert body["envelope"]["envelope_id"] == e.envelope_id
    assert Envelope.from_dict(body["envelope"]).request_id == "r1"
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["x-a"] == "1"
    assert headers["idempotency-key"] == e.envelope_id
    assert 3000 < int(headers["jeeves-deadline-ms"]) <= 4000
    assert headers["content-type"] == "application/json"


async def test_flapping_service_is_retried_until_it_answers(
    coordinator: CommBusCoordinator, pool: HttpPool
) -> None:
    rec = Recorder(Response(status_code=503), Response(status_code=502), echo_outputs)
    async with uvicorn_app(rec.app()) as base:
        setup(coordinator, service(f"{base}/dispatch", pool))
        out = await coordinator.dispatch(target(), env())
    assert not out.terminated and out.outputs == {"paid": 3}
    assert [h["outcome"] for h in out.processing_history] == ["error", "error", "ok"]
    assert [b["target"]["attempt"] for _, b in rec.seen] == [1, 2, 3]
    keys = {h["idempotency-key"] for h, _ in rec.seen}
    assert len(keys) == 1  # every attempt of one dispatch: one key


async def test_other_4xx_ends_at_once_with_status_and_bounded_excerpt(
    coordinator: CommBusCoordinator, pool: HttpPool
) -> None:
    body = b"no such account \x00\x1b[31m" + b"x" * 5000
    rec = Recorder(Response(body, status_code=404))
    async with uvicorn_app(rec.app()) as base:
        setup(coordinator, service(f"{base}/dispatch", pool, excerpt_bytes=64))
        out = await coordinator.dispatch(target(max_retries=3), env())
    assert out.terminated and len(rec.seen) == 1
    reason = out.termination_reason or ""
    assert "HTTP 404" in reason and "no such account" in reason and "not retryable" in reason
    assert "\x00" not in reason and "\x1b" not in reason
    assert reason.count("x") < 70
    assert out.errors[-1]["outcome"] == "error"


async def test_retry_after_is_honoured_within_the_deadline(
    coordinator: CommBusCoordinator, pool: HttpPool
) -> None:
    rec = Recorder(Response(status_code=429, headers={"Retry-After": "1"}), echo_outputs)
    async with uvicorn_app(rec.app()) as base:
        setup(coordinator, service(f"{base}/dispatch", pool))
        began = time.monotonic()
        out = await coordinator.dispatch(target(), env())
        waited = time.monotonic() - began
        assert not out.terminated and waited >= 0.95  # waited the second it was told
        rec.answers = [Response(status_code=503, headers={"Retry-After": "30"})]
        rec.seen.clear()
        began = time.monotonic()
        out = await coordinator.dispatch(target(timeout_seconds=2), env())
    assert out.terminated and len(rec.seen) == 1  # 30 s does not fit in 2 s: no retry
    assert "no time left" in (out.termination_reason or "")
    assert time.monotonic() - began < 1.5


async def test_slow_service_hits_the_dispatch_deadline(
    coordinator: CommBusCoordinator, pool: HttpPool
) -> None:
    release = asyncio.Event()

    async def slow(_: Any) -> Response:
        await asyncio.wait_for(release.wait(), 10)
        return Response(status_code=200)

    rec = Recorder(slow)
    async with uvicorn_app(rec.app()) as base:
        setup(coordinator, service(f"{base}/dispatch", pool))
        began = time.monotonic()
        out = await coordinator.dispatch(
            DispatchTarget("billing", "charge", timeout_seconds=1), env()
        )
        release.set()
        assert time.monotonic() - began < 3
        assert out.terminated and out.errors[-1]["outcome"] == "timeout"
        assert int(rec.seen[0][0]["jeeves-deadline-ms"]) <= 1000


async def test_per_attempt_timeout_is_retried(
    coordinator: CommBusCoordinator, pool: HttpPool
) -> None:
    release = asyncio.Event()

    async def slow(_: Any) -> Response:
        await asyncio.wait_for(release.wait(), 10)
        return Response(status_code=200)

    rec = Recorder(slow, echo_outputs)
    async with uvicorn_app(rec.app()) as base:
        setup(coordinator, service(f"{base}/dispatch", pool, timeout=0.3))
        out = await coordinator.dispatch(target(), env())
        release.set()
    assert not out.terminated and len(rec.seen) == 2
    assert "no answer" in out.processing_history[0]["error"]


async def test_max_concurrent_holds_for_http_services(
    coordinator: CommBusCoordinator, pool: HttpPool
) -> None:
    async def held(body: Any) -> Response:
        await asyncio.sleep(0.1)
        return await echo_outputs(body)

    rec = Recorder(held)
    async with uvicorn_app(rec.app()) as base:
        setup(coordinator, service(f"{base}/dispatch", pool), max_concurrent=1)
        outs = await asyncio.gather(*(coordinator.dispatch(target(), env()) for _ in range(3)))
    assert all(not o.terminated for o in outs)
    assert rec.most_in_flight == 1 and len(rec.seen) == 3


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (raw("200 OK", b"not json at all"), "not JSON"),
        (raw("200 OK", b"[1, 2]"), "must be a JSON object"),
        (raw("200 OK", b'{"outputs": 5}'), "outputs must be a JSON object"),
        (raw("200 OK", b'{"envelope_id": "someone-else"}'), "another envelope"),
        (raw("200 OK", b"[" * 100_000 + b"]" * 100_000), "not JSON"),
        (raw("200 OK", b""), "empty body"),
    ],
)
async def test_garbage_answers_end_the_dispatch(
    coordinator: CommBusCoordinator, pool: HttpPool, answer: bytes, words: str
) -> None:
    async with RawServer(lambda _: answer) as server:
        setup(coordinator, service(server.url, pool))
        out = await coordinator.dispatch(target(), env())
    assert out.terminated and words in (out.termination_reason or "")
    assert len(server.requests) == 1  # a broken answer is not retried


async def test_an_answer_trickled_in_still_ends_at_the_timeout(pool: HttpPool) -> None:
    # One byte every 50 ms passes each of httpx's per-read timeouts; the attempt as a
    # whole must still end within its timeout (the answer would take about 6 s).
    async def trickle() -> AsyncIterator[bytes]:
        for byte in b'{"outputs": {}}' + b" " * 100:
            yield bytes([byte])
            await asyncio.sleep(0.05)

    async def endpoint(_: StarletteRequest) -> Response:
        return StreamingResponse(trickle(), media_type="application/json")

    app = Starlette(routes=[Route("/dispatch", endpoint, methods=["POST"])])
    async with uvicorn_app(app) as base:
        call = service(f"{base}/dispatch", pool, timeout=0.5)
        began = time.monotonic()
        with pytest.raises(HttpServiceError) as info:
            await call(env())
        assert info.value.kind == "timeout" and info.value.retryable
        assert time.monotonic() - began < 2.5


async def test_a_retry_after_that_is_not_ascii_digits_is_no_crash(pool: HttpPool) -> None:
    # "\xb2" is a valid header byte, read as "²", which str.isdigit accepts and float refuses
    answer = b"HTTP/1.1 503 Busy\r\nRetry-After: \xb2\r\nContent-Length: 0\r\n\r\n"
    async with RawServer(lambda _: answer) as server:
        with pytest.raises(HttpServiceError) as info:
            await service(server.url, pool)(env())
    assert info.value.status == 503 and info.value.retryable
    assert info.value.retry_after is None


async def test_broken_http_and_refused_connections_are_retried(
    coordinator: CommBusCoordinator, pool: HttpPool
) -> None:
    async with RawServer(lambda _: b"garbage\r\n\r\n") as server:
        setup(coordinator, service(server.url, pool))
        out = await coordinator.dispatch(target(max_retries=2), env())
        assert out.terminated and len(server.requests) == 3
        assert "cannot reach" in (out.termination_reason or "")
        url = server.url
    coordinator.register_service(ServiceDescriptor(name="gone", service_type="worker"))
    coordinator.register_handler("gone", service(url, pool))  # now nobody listens there
    out = await coordinator.dispatch(DispatchTarget("gone", "charge", max_retries=1), env())
    assert out.terminated and "ConnectError" in (out.termination_reason or "")
    assert len(out.processing_history) == 2


@pytest.mark.parametrize("declared", [True, False])
async def test_oversized_answers_are_refused(
    coordinator: CommBusCoordinator, pool: HttpPool, declared: bool
) -> None:
    big = b'{"outputs": {"x": "' + b"y" * 200_000 + b'"}}'

    def answer(_: Request) -> bytes:
        if declared:
            return raw("200 OK", big)
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + big  # no length: read to EOF

    async with RawServer(answer) as server:
        setup(coordinator, service(server.url, pool, max_response_bytes=100_000))
        out = await coordinator.dispatch(target(), env())
    assert out.terminated and "exceeds 100000" in (out.termination_reason or "")


async def test_204_and_a_full_echo_are_valid_answers(pool: HttpPool) -> None:
    e = env()
    echoed = dict(e.to_dict(), outputs={"a": 1}, terminated=True, termination_reason="done")
    answers = iter([raw("204 No Content", b""), raw("200 OK", json.dumps(echoed).encode())])
    async with RawServer(lambda _: next(answers)) as server:
        svc = service(server.url, pool, timeout=2)
        same = await svc(e)  # called directly: no dispatch around it
        assert same is e and not e.terminated
        assert json.loads(server.requests[0].body)["target"]["method"] == "call"
        assert "jeeves-deadline-ms" not in server.requests[0].headers
        with pytest.raises(HttpServiceError) as caught:
            await svc(e)
    assert e.outputs == {"a": 1} and e.terminated
    assert not caught.value.retryable and "terminated the envelope: done" in str(caught.value)


async def test_a_terminated_answer_ends_the_dispatch_as_an_error(
    coordinator: CommBusCoordinator, pool: HttpPool
) -> None:
    async def refuse(body: Any) -> Response:
        return JSONResponse({"outputs": {"why": "limit"}, "terminated": True,
                             "termination_reason": "over the limit"})  # fmt: skip

    rec = Recorder(refuse)
    async with uvicorn_app(rec.app()) as base:
        setup(coordinator, service(f"{base}/dispatch", pool))
        out = await coordinator.dispatch(target(max_retries=3), env())
    assert out.terminated and len(rec.seen) == 1
    assert "over the limit" in (out.termination_reason or "")
    assert out.outputs == {"why": "limit"} and out.errors[-1]["outcome"] == "error"


async def test_client_span_and_metrics(coordinator: CommBusCoordinator, pool: HttpPool) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = CollectorRegistry()
    rec = Recorder(Response(status_code=500), echo_outputs)
    async with uvicorn_app(rec.app()) as base:
        url = f"{base}/dispatch"
        svc = HttpService(url, pool=pool, tracer_provider=provider, metrics_registry=registry)
        setup(coordinator, svc)
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("parent") as parent:
            out = await coordinator.dispatch(target(), env())
    assert not out.terminated
    spans = [s for s in exporter.get_finished_spans() if s.name == "POST"]
    assert len(spans) == 2
    first, second = spans
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["http.response.status_code"] == 500
    assert first.attributes["error.type"] == "500"
    assert second.attributes["http.response.status_code"] == 200
    assert "error.type" not in second.attributes
    assert second.attributes["url.full"] == url
    assert second.attributes["server.address"] == "127.0.0.1"
    assert second.attributes["jeeves.dispatch.service"] == "billing"
    assert second.attributes["jeeves.dispatch.attempt"] == 2
    assert second.parent is not None
    assert second.parent.span_id == parent.get_span_context().span_id
    # the request's traceparent names the client span
    traceparent = rec.seen[1][0]["traceparent"]
    assert traceparent.split("-")[1] == f"{second.context.trace_id:032x}"
    assert traceparent.split("-")[2] == f"{second.context.span_id:016x}"

    def sample(direction: str, pattern: str) -> float | None:
        return registry.get_sample_value(
            "commbus_wire_messages_total",
            {"transport": "http", "direction": direction, "pattern": pattern},
        )

    assert sample("sent", "query") == 2
    assert sample("received", "reply") == 1


async def test_rejected_answers_are_counted(pool: HttpPool) -> None:
    registry = CollectorRegistry()
    async with RawServer(lambda _: raw("200 OK", b"{")) as server:
        svc = HttpService(server.url, pool=pool, metrics_registry=registry)
        with pytest.raises(HttpServiceError) as caught:
            await svc(env())
    assert not caught.value.retryable and caught.value.kind == "malformed"
    value = registry.get_sample_value(
        "commbus_wire_rejected_total", {"transport": "http", "reason": "malformed"}
    )
    assert value == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        HttpService("ftp://x/")
    with pytest.raises(ValueError):
        HttpService("http://x/", timeout=0)
    assert "s3cret" not in repr(HttpService("http://u:s3cret@x/"))
