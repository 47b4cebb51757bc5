"""AdmissionReview v1 in, AdmissionReview v1 out.

A review that cannot be read has no uid to answer to: that is an HTTP 400 and
the API server applies the webhook's failurePolicy. A readable review about a
pod we refuse (bad annotations) is answered ``allowed: false`` with a message
the user sees in the ReplicaSet's events.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from .annotations import AnnotationError
from .pod import PodError, check_shape, describe, inject
from .settings import Settings

log = logging.getLogger(__name__)
# A pod, managedFields included, nests some 20 levels; copying and diffing recurse
# once per level, so a deeper document is refused before it reaches them.
MAX_DEPTH = 100


class BadReview(ValueError):
    """Not an AdmissionReview we can answer; the message says what is wrong."""


def _too_deep(doc: object) -> bool:
    """Whether ``doc`` nests deeper than MAX_DEPTH; iterative, so any depth is safe to ask."""
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_DEPTH:
            return True
        stack.extend((c, depth + 1) for c in children)
    return False


def parse_review(body: bytes) -> dict[str, Any]:
    try:
        review = json.loads(body)
    except RecursionError:
        raise BadReview(f"the body nests deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as e:
        # The decoder's message names a position, never the body's content.
        raise BadReview(f"the body is not JSON: {e}") from None
    if _too_deep(review):
        raise BadReview(f"the body nests deeper than {MAX_DEPTH} levels")
    if not isinstance(review, dict):
        raise BadReview("expected an AdmissionReview object")
    if review.get("kind") != "AdmissionReview" or review.get("apiVersion") not in (
        "admission.k8s.io/v1",
        "admission.k8s.io/v1beta1",
    ):
        raise BadReview("expected kind AdmissionReview, apiVersion admission.k8s.io/v1")
    request = review.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise BadReview("the AdmissionReview has no request.uid")
    if not 0 < len(request["uid"]) <= 128:  # a UUID is 36; it is echoed back
        raise BadReview("request.uid is empty or longer than 128 characters")
    return review


def answer(review: dict[str, Any], settings: Settings) -> dict[str, Any]:
    request = review["request"]
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    out = {"apiVersion": review["apiVersion"], "kind": "AdmissionReview", "response": response}
    kind = request.get("kind")
    pod = request.get("object")
    if (
        not isinstance(kind, dict)
        or kind.get("kind") != "Pod"
        or request.get("operation") != "CREATE"
        or not isinstance(pod, dict)
    ):
        response["warnings"] = ["sidegate: only Pod CREATE is injected; let through unchanged"]
        return out
    meta = pod.get("metadata")
    namespace = request.get("namespace") or (
        meta.get("namespace") if isinstance(meta, dict) else None
    )
    namespace = namespace if isinstance(namespace, str) else ""
    try:
        check_shape(pod)
        who = describe(pod, namespace)
        result = inject(pod, namespace, settings)
    except AnnotationError as e:
        who = describe(pod, namespace) if not isinstance(e, PodError) else f"{namespace[:63]}/?"
        log.info("refused %s: %s", who, e)
        response["allowed"] = False
        response["status"] = {
            "code": 400,
            "reason": "BadRequest",
            "message": f"sidegate: cannot inject pod {who}: {e}",
        }
        return out
    if result.skipped:
        log.info("skipped %s: %s", who, result.skipped)
        return out
    log.info("injected %s (%d patch operations)", who, len(result.patch))
    if result.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(result.patch).encode()).decode()
    if result.warnings:
        response["warnings"] = [f"sidegate: {w}" for w in result.warnings]
    return out
