"""The request pipeline: what sidegate does to each request, in order, in one place.

::

    request steps (policy stage, once per request; any may answer at once)
        validate → count tokens → route → audit gate → responses state → identify caller
        → admit quotas
    completion listeners (once the last stage is done with the request,
    refusals included: each reads the request's record, ``state.RequestState``)
        settle quotas → record telemetry (spans, metrics) → audit record

A feature is one module here plus one entry in ``REQUEST_STEPS`` or
``COMPLETION`` (as Starlette's ``build_middleware_stack`` lists its
middleware). Each step and listener declares what it ``needs`` from the
exchange; ``needs`` is their union, from which the Envoy processing modes
follow (``modes``, used by ``envoy_bootstrap``): what nothing reads is not
sent to Python.

Validation comes before the caller is identified: identity only keys quotas,
so a model under no quota never refuses an identity header, and a malformed
body is always the first error a caller hears about.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..audit.gate import AuditGate
from ..audit.listener import AuditRecords
from ..state import RequestState
from ..telemetry.listener import RecordTelemetry
from .admit import AdmitQuotas
from .count_tokens import CountTokens
from .identify import IdentifyCaller
from .modes import policy_mode, policy_refusal_mode, provider_mode
from .responses_state import ResponsesState
from .route import Route, unknown_model
from .settle import SettleQuotas
from .step import Answer, Needs, RequestContext, Step
from .validate import Validate

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = [
    "COMPLETION",
    "REQUEST_STEPS",
    "Answer",
    "Listener",
    "Needs",
    "RequestContext",
    "Step",
    "completion_listeners",
    "needs",
    "policy_mode",
    "policy_refusal_mode",
    "provider_mode",
    "request_steps",
    "unknown_model",
]

Listener = Callable[[RequestState], None]

# The order, in one place. A feature is a module here and one entry below.
REQUEST_STEPS: tuple[type[Step], ...] = (
    Validate,
    CountTokens,
    Route,
    AuditGate,
    ResponsesState,
    IdentifyCaller,
    AdmitQuotas,
)
COMPLETION: tuple[Callable[[Gateway], Listener], ...] = (
    SettleQuotas,
    RecordTelemetry,
    AuditRecords,
)


def request_steps() -> tuple[Step, ...]:
    return tuple(step() for step in REQUEST_STEPS)


def completion_listeners(gateway: Gateway) -> list[Listener]:
    return [listener(gateway) for listener in COMPLETION]


def needs(parts: Iterable[object]) -> Needs:
    """What the steps and listeners ``parts`` (classes or instances) read, together."""
    out = Needs.NOTHING
    for part in parts:
        out |= getattr(part, "needs", Needs.NOTHING)
    return out
