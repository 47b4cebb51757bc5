"""Metric instruments, the GenAI conventions' and sidegate's own, fed from request records.

Every attribute is bounded by the config: routes, providers and models it
names, status codes, error types from a fixed set. Caller ids become
attributes only when ``telemetry.metrics.caller_labels`` asks for them.

Counters are tallied here, in a dict per counter, and handed to the SDK as
observable counters when a reader collects: a request costs a dict update
per counter instead of the SDK's per-measurement validation and hashing,
once per reader (``sidegate bench``, +telemetry). Histograms go through the
SDK as they must.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource

from .. import __version__
from . import attributes
from .semconv import DURATION_BUCKETS, TOKEN_BUCKETS, TTFC_BUCKETS, Names

if TYPE_CHECKING:
    from ..config import GatewayConfig
    from ..state import RequestState


class Tally:
    """A monotonic counter's totals by attribute set, read by the SDK at collection time.

    Written on the event loop thread, read on a reader's thread: ``dict.copy``
    is one step under the GIL, so a collection never sees a dict mid-change.
    """

    def __init__(self) -> None:
        self.totals: dict[tuple[tuple[str, Any], ...], float] = {}

    def add(self, value: float, attrs: tuple[tuple[str, Any], ...]) -> None:
        totals = self.totals
        totals[attrs] = totals.get(attrs, 0) + value

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(v, dict(k)) for k, v in self.totals.copy().items()]


class Metrics:
    def __init__(
        self,
        resource: Resource,
        names: Names,
        readers: Sequence[MetricReader],
        spans_dropped: Callable[[], int],
    ) -> None:
        self.names = names
        # Requests being served: the gateway's request table, once there is one.
        self.in_flight: Callable[[], int] = lambda: 0
        self.audit_lost: Callable[[], dict[str, int]] = dict
        self.provider = MeterProvider(resource=resource, metric_readers=list(readers))
        m = self.provider.get_meter("sidegate", __version__)

        def counter(name: str, unit: str, description: str) -> Tally:
            tally = Tally()
            m.create_observable_counter(
                name, callbacks=[tally.observe], unit=unit, description=description
            )
            return tally

        if names.latest:
            self.usage_counters = {
                kind: counter(
                    f"gen_ai.client.inference.usage.{kind}",
                    "{token}",
                    f"{kind.replace('.', ' ').replace('_', ' ')} used",
                )
                for kind in (
                    "input_tokens",
                    "output_tokens",
                    "cache_read.input_tokens",
                    "cache_write.input_tokens",
                    "reasoning.output_tokens",
                )
            }
            self.operation_tokens = {
                kind: m.create_histogram(
                    f"gen_ai.client.inference.operation.{kind}",
                    unit="{token}",
                    description=f"{kind.replace('_', ' ')} per operation",
                    explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
                )
                for kind in ("input_tokens", "output_tokens")
            }
        else:
            self.token_usage = m.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
            )
        self.duration = m.create_histogram(
            names.duration,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.ttfc = m.create_histogram(
            names.time_to_first_chunk,
            unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=TTFC_BUCKETS,
        )
        self.upstream = m.create_histogram(
            "sidegate.upstream.duration",
            unit="s",
            description="Duration of each attempt at a provider, by provider and outcome.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.requests = counter(
            "sidegate.requests", "{request}", "Requests by route, provider, model and outcome."
        )
        self.retries = counter(
            "sidegate.retries",
            "{attempt}",
            "Attempts that failed and were retried, by provider and reason.",
        )
        self.quota_refusals = counter(
            "sidegate.quota.refusals", "{request}", "Requests a quota refused, by quota."
        )
        self.cost = counter(
            "sidegate.cost.usd",
            "{USD}",
            "What answered requests cost at the configured prices, in USD.",
        )
        self.extproc_errors = counter(
            "sidegate.extproc.errors",
            "{error}",
            "Failures of sidegate's own processing, answered with a 500.",
        )

        def observe(get: Callable[[], int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
            return lambda _options: [Observation(get())]

        m.create_observable_up_down_counter(
            "sidegate.requests.in_flight",
            callbacks=[observe(lambda: self.in_flight())],
            unit="{request}",
            description="Requests being served.",
        )
        m.create_observable_counter(
            "sidegate.audit.records.lost",
            callbacks=[
                lambda _options: [
                    Observation(n, {"sink": sink}) for sink, n in self.audit_lost().items()
                ]
            ],
            unit="{record}",
            description="Audit records a sink could not take (a full disk, say), by sink.",
        )
        m.create_observable_counter(
            "sidegate.telemetry.spans.dropped",
            callbacks=[observe(spans_dropped)],
            unit="{span}",
            description="Spans dropped because the export queue was full.",
        )

    def record(self, state: RequestState, config: GatewayConfig) -> None:
        route = attributes.metric_route(state, config)
        provider = config.providers.get(state.provider or "")
        genai: dict[str, Any] = {
            "gen_ai.operation.name": attributes.operation(state.api),
            "gen_ai.request.model": route,
        }
        if provider is not None:
            genai["gen_ai.provider.name"] = attributes.provider_name(provider)
        error = state.error_type
        base: tuple[tuple[str, Any], ...] = (
            ("sidegate.route", route),
            ("sidegate.provider", state.provider or ""),
            ("sidegate.model", state.model or ""),
        )
        labels = config.telemetry.metrics.caller_labels
        if labels:
            caller = state.caller
            base += tuple(
                (f"sidegate.caller.{label}", getattr(caller, label) if caller else "-")
                for label in labels
            )
        status = state.final_status
        self.requests.add(
            1,
            (
                *base,
                ("sidegate.outcome", error or "ok"),
                ("http.response.status_code", status if status is not None else 0),
            ),
        )
        ended = state.ended if state.ended is not None else state.started
        self.duration.record(
            max(0.0, ended - state.started), {**genai, "error.type": error} if error else genai
        )
        if state.first_token is not None:
            self.ttfc.record(max(0.0, state.first_token - state.started), genai)
        usage = state.usage
        if usage is not None:
            if self.names.latest:
                modality = (*sorted(genai.items()), ("gen_ai.token.modality", "unknown"))
                c = self.usage_counters
                c["input_tokens"].add(usage.input_tokens, modality)
                c["output_tokens"].add(usage.output_tokens, modality)
                c["cache_read.input_tokens"].add(usage.cache_read_tokens, modality)
                c["cache_write.input_tokens"].add(usage.cache_creation_tokens, modality)
                c["reasoning.output_tokens"].add(usage.reasoning_tokens, modality)
                self.operation_tokens["input_tokens"].record(usage.input_tokens, genai)
                self.operation_tokens["output_tokens"].record(usage.output_tokens, genai)
            else:
                self.token_usage.record(usage.input_tokens, {**genai, "gen_ai.token.type": "input"})
                self.token_usage.record(
                    usage.output_tokens, {**genai, "gen_ai.token.type": "output"}
                )
            cost = attributes.cost_usd(state, config)
            if cost:
                self.cost.add(cost, base)
        attempts = state.attempts
        for i, attempt in enumerate(attempts):
            self.upstream.record(
                max(0.0, (attempt.ended or ended) - attempt.started),
                {
                    "sidegate.provider": attempt.provider,
                    "sidegate.model": attempt.model,
                    "sidegate.outcome": "ok" if not attempt.failed else attempt.outcome,
                },
            )
            if i + 1 < len(attempts):
                self.retries.add(
                    1,
                    (
                        ("sidegate.provider", attempt.provider),
                        ("sidegate.retry.reason", attempt.outcome),
                        ("sidegate.failover", attempts[i + 1].provider != attempt.provider),
                    ),
                )
        answered = state.answered
        if answered is not None and answered.quota:
            refused = (("sidegate.quota", answered.quota), ("sidegate.route", route))
            self.quota_refusals.add(1, refused)

    def extproc_error(self, stage: str) -> None:
        self.extproc_errors.add(1, (("sidegate.stage", stage),))

    def shutdown(self) -> None:
        self.provider.shutdown()
