"""``sidegate inject probe``: call a running webhook as the API server would.

Used by the chart's ``helm test`` and by operators: it sends a minimal
AdmissionReview over HTTPS, verifying the certificate against the CA the API
server trusts, and checks that the answer injects the sidecar.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
import uuid

from .sidecar import EXTPROC, PROXY


def probe(url: str, ca_file: str, timeout: float = 10.0) -> str:
    """A one-line success report; raises RuntimeError with what went wrong."""
    uid = str(uuid.uuid4())
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "sidegate-probe",
            "operation": "CREATE",
            "userInfo": {"username": "sidegate-probe"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"generateName": "sidegate-probe-", "namespace": "sidegate-probe"},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]},
            },
        },
    }
    ctx = ssl.create_default_context(cafile=ca_file)
    req = urllib.request.Request(
        url, data=json.dumps(review).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            answer = json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{url} answered {e.code}: {e.read()[:500]!r}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise RuntimeError(f"cannot reach {url}: {getattr(e, 'reason', e)}") from None
    response = answer.get("response") or {}
    if response.get("uid") != uid:
        raise RuntimeError("the webhook answered for another request uid")
    if not response.get("allowed"):
        raise RuntimeError(f"the webhook refused the probe pod: {response.get('status')}")
    patch = json.loads(base64.b64decode(response.get("patch") or "W10="))
    names = json.dumps(patch)
    if EXTPROC not in names or PROXY not in names:
        raise RuntimeError("the webhook answered without injecting the sidecar")
    return f"{url}: injected {EXTPROC} and {PROXY} ({len(patch)} patch operations)"
