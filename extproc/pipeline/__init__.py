"""The request pipeline: what sidegate does to each request, in order, in one place.

::

    request steps (policy stage, once per request; any may answer at once)
        validate → route → identify caller → admit quotas
    completion listeners (once the last stage is done with the request)
        settle quotas

A feature is one module here plus one entry in ``request_steps`` or
``completion_listeners`` (as Starlette's ``build_middleware_stack`` lists its
middleware). Each step and listener declares what it ``needs`` from the
exchange; ``needs`` is their union, from which the Envoy processing modes
follow (``extproc.provider_stage``): what nothing reads is not sent to Python.

Validation comes before the caller is identified: identity only keys quotas,
so a model under no quota never refuses an identity header, and a malformed
body is always the first error a caller hears about.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..state import RequestState
from .admit import AdmitQuotas
from .identify import IdentifyCaller
from .route import Route, unknown_model
from .settle import SettleQuotas
from .step import Answer, Needs, RequestContext, Step
from .validate import Validate

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = [
    "Answer",
    "Listener",
    "Needs",
    "RequestContext",
    "Step",
    "completion_listeners",
    "needs",
    "request_steps",
    "unknown_model",
]

Listener = Callable[[RequestState], None]


def request_steps() -> tuple[Step, ...]:
    return (
        Validate(),
        Route(),
        IdentifyCaller(),
        AdmitQuotas(),
    )


def completion_listeners(gateway: Gateway) -> list[Listener]:
    return [
        SettleQuotas(gateway),
    ]


def needs(parts: Iterable[object]) -> Needs:
    """What the steps and listeners ``parts`` read, together."""
    out = Needs.NOTHING
    for part in parts:
        out |= getattr(part, "needs", Needs.NOTHING)
    return out
