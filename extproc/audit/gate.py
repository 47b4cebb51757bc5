"""The audit gate: while the audit log cannot be written, refuse new requests (503).

Only under ``audit.on_failure: refuse``, and only while a sink the durable
mode counts on (the file, stdout) fails or the writer's queue is full. The
503 names the sink and the reason, in the caller's API format, with a
Retry-After: the writer tries the sink again every second.
"""

from __future__ import annotations

from ..errors import GatewayError
from ..pipeline.step import Answer, Needs, RequestContext, Step

RETRY_AFTER = 5


class AuditGate(Step):
    needs = Needs.NOTHING

    async def run(self, ctx: RequestContext) -> Answer | None:
        reason = ctx.gw.audit.refusing
        if reason is None:
            return None
        raise GatewayError(
            503,
            f"the audit log cannot be written ({reason}); sidegate refuses requests "
            "until it can (audit.on_failure: refuse)",
            code="audit_unavailable",
            retry_after=RETRY_AFTER,
        )
