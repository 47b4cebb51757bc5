"""Who is calling: the dimensions quotas are keyed by.

``user`` and ``tenant`` come from headers the application sets (the sidecar
trusts its own pod), falling back to the user field of the request body;
``workload`` is the pod's, set by the injector. The gateway removes the
identity headers before the request leaves, so providers never see them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..apis import ClientApi
from ..errors import GatewayError
from .config import Identity

ANONYMOUS = "-"
MAX_LENGTH = 256
WORKLOAD_ENV = "SIDEGATE_WORKLOAD"


@dataclass(frozen=True, slots=True)
class Caller:
    user: str = ANONYMOUS
    tenant: str = ANONYMOUS
    workload: str = ANONYMOUS


def _body_user(api: ClientApi, body: dict[str, Any]) -> str | None:
    if api is ClientApi.ANTHROPIC_MESSAGES:
        meta = body.get("metadata")
        value = meta.get("user_id") if isinstance(meta, dict) else None
    else:
        # OpenAI's `user` (deprecated in favour of safety_identifier, still sent).
        value = body.get("user") or body.get("safety_identifier")
    return value if isinstance(value, str) and value else None


def _checked(value: str, source: str, strict: bool = True) -> str:
    if len(value) > MAX_LENGTH and not strict:
        return value[:MAX_LENGTH]
    if len(value) > MAX_LENGTH:
        raise GatewayError(
            400,
            f"{source} is {len(value)} characters long; at most {MAX_LENGTH} are allowed",
            code="invalid_request",
        )
    return value


def identify(
    identity: Identity,
    headers: dict[str, str],
    api: ClientApi,
    body: dict[str, Any],
    *,
    strict: bool = True,
) -> Caller:
    """The caller; a value over MAX_LENGTH is refused, or cut short when not ``strict``
    (a request no quota counts is not refused for its identity, only recorded)."""
    user = headers.get(identity.user_header)
    if user:
        user = _checked(user, f"header {identity.user_header}", strict)
    else:
        user = _body_user(api, body)
        user = _checked(user, "the request's user field", strict) if user else ANONYMOUS
    tenant = headers.get(identity.tenant_header) or identity.tenant or ANONYMOUS
    workload = identity.workload or os.environ.get(WORKLOAD_ENV) or ANONYMOUS
    return Caller(
        user=user,
        tenant=_checked(tenant, f"header {identity.tenant_header}", strict),
        workload=workload,
    )
