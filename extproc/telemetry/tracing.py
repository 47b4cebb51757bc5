"""Traces: one span per request, one child span per attempt, W3C trace context in and out.

Spans are built once the request is over, from its record, with the start
and end times it noted: no span lives through a request, and a request that
is not sampled costs no span at all. The ids a provider saw in its
``traceparent`` are chosen when the first attempt leaves (``begin``) and
handed to the SDK's tracer when the spans are built (``_PresetIds``), so the
provider's spans join the trace under the attempt that called it.

Export runs on the SDK's batch processor thread with a bounded queue: a
collector that is down or slow costs a request nothing; spans past the
queue are dropped and counted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .. import __version__
from . import attributes, content
from .config import SAMPLERS, Export, Protocol, TelemetryConfig, Traces
from .destinations import exporter_args
from .semconv import Names

if TYPE_CHECKING:
    from ..config import GatewayConfig
    from ..state import Attempt, RequestState

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
SAMPLED = 0x01
RANDOM = 0x02  # W3C trace context level 2: the trace id is random


class _PresetIds(IdGenerator):
    """The SDK's random ids, except the next ones when preset (set just before a span starts).

    Used on the event loop thread only, where spans are built.
    """

    def __init__(self) -> None:
        self._random = RandomIdGenerator()
        self.trace_id = 0
        self.span_id = 0

    def generate_trace_id(self) -> int:
        value, self.trace_id = self.trace_id, 0
        return value or self._random.generate_trace_id()

    def generate_span_id(self) -> int:
        value, self.span_id = self.span_id, 0
        return value or self._random.generate_span_id()

    def random_trace_id(self) -> int:
        return self._random.generate_trace_id()

    def random_span_id(self) -> int:
        return self._random.generate_span_id()


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting the spans a full queue drops.

    The queue is a bounded deque that drops its oldest span when full; the
    SDK counts that only in its opt-in self-metrics, so it is counted here.
    """

    def __init__(self, exporter: SpanExporter, traces: Traces) -> None:
        super().__init__(
            exporter,
            max_queue_size=traces.max_queue_size,
            max_export_batch_size=traces.max_export_batch_size,
            schedule_delay_millis=(
                traces.schedule_delay * 1000 if traces.schedule_delay is not None else None
            ),
        )
        # The SDK's own queue (collections.deque with maxlen): read, never changed.
        self._queue = self._batch_processor._queue
        self.dropped = 0

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._queue
        if queue.maxlen is not None and len(queue) >= queue.maxlen:
            self.dropped += 1
        super().on_end(span)


def sampler_for(traces: Traces, env: os._Environ[str] | dict[str, str] = os.environ) -> Sampler:
    """The configured sampler, else ``OTEL_TRACES_SAMPLER``/``_ARG``, else parentbased_always_on."""
    name = traces.sampler
    ratio = traces.sampler_ratio
    if name is None:
        name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
        if name not in SAMPLERS:
            log.warning(
                "OTEL_TRACES_SAMPLER=%r is not a sampler sidegate knows; "
                "using parentbased_always_on",
                name[:64],
            )
            name = "parentbased_always_on"
    if ratio is None:
        try:
            ratio = float(env.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
        except ValueError:
            ratio = 1.0
        ratio = min(max(ratio, 0.0), 1.0)
    root: Sampler = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(ratio),
    }.get(name.removeprefix("parentbased_"), ALWAYS_ON)
    return ParentBased(root) if name.startswith("parentbased_") else root


def span_exporter(export: Export, env: os._Environ[str] | dict[str, str]) -> SpanExporter:
    protocol, kwargs = exporter_args(export, "TRACES", "/v1/traces", env)
    if protocol is Protocol.GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    return HTTPSpanExporter(**kwargs)


class Tracing:
    def __init__(
        self,
        config: TelemetryConfig,
        resource: Resource,
        names: Names,
        exporter: SpanExporter,
        env: os._Environ[str] | dict[str, str] = os.environ,
    ) -> None:
        self.names = names
        self.sampler = sampler_for(config.traces, env)
        self._ids = _PresetIds()
        self.processor = CountingBatchSpanProcessor(exporter, config.traces)
        self.provider = TracerProvider(
            resource=resource, sampler=self.sampler, id_generator=self._ids
        )
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("sidegate", __version__)

    # -- while the request runs (the provider stage) --------------------------------

    def begin(self, state: RequestState) -> None:
        """Choose the request's trace and span ids and its sampling decision, once."""
        if state.trace_id:
            return
        parent = _parent_context(state)
        parent_sc = trace.get_current_span(parent).get_span_context()
        if parent_sc.is_valid:
            state.trace_id = parent_sc.trace_id
        else:
            state.trace_id = self._ids.random_trace_id()
        state.span_id = self._ids.random_span_id()
        # Built-in samplers decide from the parent and the trace id alone:
        # the tracer, asked again when the span is built, decides the same.
        result = self.sampler.should_sample(parent, state.trace_id, "", SpanKind.CLIENT)
        state.sampled = result.decision is Decision.RECORD_AND_SAMPLE

    def attempt_headers(self, state: RequestState, attempt: Attempt | None) -> dict[str, str]:
        """The ``traceparent`` (and the client's ``tracestate``) an attempt sends its provider."""
        self.begin(state)
        span_id = self._ids.random_span_id()
        if attempt is not None:
            attempt.span_id = span_id
        flags = (SAMPLED if state.sampled else 0) | RANDOM
        out = {"traceparent": f"00-{state.trace_id:032x}-{span_id:016x}-{flags:02x}"}
        if state.tracestate:
            out["tracestate"] = state.tracestate
        return out

    # -- once it is over (the completion listener) ---------------------------------

    def record(
        self,
        state: RequestState,
        config: GatewayConfig,
        scrubber: Callable[[], Callable[[bytes], bytes]] = lambda: bytes,
    ) -> None:
        """Build the request's spans. ``scrubber``: what overwrites provider keys
        in recorded content (asked for only when the route records content)."""
        self.begin(state)
        if not state.sampled:
            return  # the tracer would build no-op spans: skip the work
        ended = state.ended if state.ended is not None else state.started
        # The conventions' name; the operation alone when no model was read.
        model = state.requested_model[: attributes.MAX_VALUE]
        name = f"{attributes.operation(state.api)} {model}".rstrip()
        attrs = attributes.request_span(state, config, self.names.cache_write_attribute)
        route = state.plan.route if state.plan is not None else ""
        if route and config.telemetry.content.captures(route):
            limit = config.telemetry.content.max_chars
            attrs.update(content.attributes(state, limit, scrubber()))
        parent_context = _parent_context(state)
        ids = self._ids
        # The tracer takes a trace id only for a root span (else the parent's).
        root = not trace.get_current_span(parent_context).get_span_context().is_valid
        ids.trace_id = state.trace_id if root else 0
        ids.span_id = state.span_id
        span = self.tracer.start_span(
            name,
            context=parent_context,
            kind=SpanKind.CLIENT,
            attributes=attrs,
            start_time=_ns(state, state.started),
        )
        error = state.error_type
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        parent = trace.set_span_in_context(span)
        for i, attempt in enumerate(state.attempts):
            ids.span_id = attempt.span_id
            child = self.tracer.start_span(
                "sidegate.attempt",
                context=parent,
                kind=SpanKind.CLIENT,
                attributes=attributes.attempt_span(state, i, attempt, config),
                start_time=_ns(state, attempt.started),
            )
            if attempt.failed:
                child.set_status(Status(StatusCode.ERROR, attempt.outcome))
            child.end(end_time=_ns(state, attempt.ended or ended))
        span.end(end_time=_ns(state, ended))

    @property
    def dropped(self) -> int:
        return self.processor.dropped

    def shutdown(self) -> None:
        self.provider.shutdown()


def _parent_context(state: RequestState) -> Context:
    if not state.traceparent:
        return Context()
    carrier = {"traceparent": state.traceparent}
    if state.tracestate:
        carrier["tracestate"] = state.tracestate
    return _PROPAGATOR.extract(carrier)


def _ns(state: RequestState, monotonic: float) -> int:
    return int(state.wall(monotonic) * 1e9)
