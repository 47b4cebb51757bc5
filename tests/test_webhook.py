"""The injector webhook over real HTTPS, called the way the API server calls it."""

from __future__ import annotations

import base64
import contextlib
import copy
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from extproc.inject.webhook import Limits, WebhookServer, serve
from tests.certs import Pair, issue
from tests.harness import free_port
from tests.isolation_cases import ACCEPTED_PARAMS, REFUSAL_PARAMS

SERVICE = "sidegate-webhook.sidegate-system.svc"
FIXTURES = Path(__file__).parent / "fixtures" / "pods"


def _secret_volume(directory: Path, pair: Pair, version: int) -> None:
    """Lay out tls.crt/tls.key the way the kubelet mounts a Secret (``..data`` swaps)."""
    target = directory / f"..2026_11_24_{version:02d}"
    target.mkdir()
    (target / "tls.crt").write_text(pair.cert_pem)
    (target / "tls.key").write_text(pair.key_pem)
    tmp = directory / "..data_tmp"
    tmp.symlink_to(target.name)
    os.replace(tmp, directory / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


@contextlib.contextmanager
def _running(tmp_path: Path, limits: Limits | None = None) -> Iterator[dict[str, Any]]:
    pair = issue([SERVICE, "sidegate-webhook.sidegate-system.svc.cluster.local"])
    certs = tmp_path / "tls"
    certs.mkdir()
    _secret_volume(certs, pair, 1)
    server: WebhookServer = serve(
        "127.0.0.1", 0, str(certs / "tls.crt"), str(certs / "tls.key"), None, limits
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"port": server.server_address[1], "ca": pair.ca_pem, "certs": certs, "server": server}
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with _running(tmp_path) as w:
        yield w


def _call(
    port: int,
    ca: str,
    method: str = "POST",
    path: str = "/inject?timeout=10s",
    body: bytes | None = None,
    ctype: str = "application/json",
    hostname: str = SERVICE,
) -> tuple[int, Any]:
    status, _, doc = _call_full(port, ca, method, path, body, ctype, hostname)
    return status, doc


def _call_full(
    port: int,
    ca: str,
    method: str = "POST",
    path: str = "/inject?timeout=10s",
    body: bytes | None = None,
    ctype: str = "application/json",
    hostname: str = SERVICE,
) -> tuple[int, http.client.HTTPMessage, Any]:
    ctx = ssl.create_default_context(cadata=ca)
    conn = http.client.HTTPConnection(hostname, port, timeout=20)
    conn.sock = ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=20), server_hostname=hostname
    )
    headers = {"Content-Type": ctype} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.headers, json.loads(data) if data else None


def _review(
    pod: dict[str, Any], uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002"
) -> dict[str, Any]:
    ns = pod["metadata"].get("namespace", "default")
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod["metadata"].get("name", ""),
            "namespace": ns,
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "groups": ["system:serviceaccounts"],
            },
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def _pod(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())
    return doc


def test_inject_over_https(webhook: dict[str, Any]) -> None:
    pod = _pod("deployment-pod")
    status, out = _call(webhook["port"], webhook["ca"], body=json.dumps(_review(pod)).encode())
    assert status == 200
    assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
    response = out["response"]
    assert response["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    admitted = copy.deepcopy(pod)
    admitted["metadata"].pop("managedFields")
    injected = jsonpatch.apply_patch(admitted, patch)
    assert [c["name"] for c in injected["spec"]["initContainers"]] == [
        "sidegate-extproc",
        "sidegate-proxy",
    ]
    assert not any(op["path"].startswith("/metadata/managedFields") for op in patch)

    # Reinvocation with our own output: allowed, nothing to patch.
    status, out = _call(webhook["port"], webhook["ca"], body=json.dumps(_review(injected)).encode())
    assert status == 200 and out["response"]["allowed"] and "patch" not in out["response"]


def test_refusals_and_pass_throughs(webhook: dict[str, Any]) -> None:
    port, ca = webhook["port"], webhook["ca"]
    pod = _pod("deployment-pod")
    pod["metadata"]["annotations"]["sidegate.io/capture"] = "tproxy"
    status, out = _call(port, ca, body=json.dumps(_review(pod)).encode())
    assert status == 200 and out["response"]["allowed"] is False
    message = out["response"]["status"]["message"]
    assert out["response"]["status"]["code"] == 400
    assert message.startswith("sidegate: cannot inject pod apps/chat-7c9f8d6b5-*:")
    assert "annotation sidegate.io/capture: 'tproxy' is not one of env, iptables, none" in message

    host = _review(_pod("host-network"))
    status, out = _call(port, ca, body=json.dumps(host).encode())
    assert status == 200 and out["response"] == {"uid": host["request"]["uid"], "allowed": True}

    update = _review(_pod("deployment-pod"))
    update["request"]["operation"] = "UPDATE"
    status, out = _call(port, ca, body=json.dumps(update).encode())
    assert status == 200 and out["response"]["allowed"] and "patch" not in out["response"]


@pytest.fixture(scope="module")
def shared_webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One server for the table-driven cases below: each case is one review."""
    with _running(tmp_path_factory.mktemp("webhook")) as w:
        yield w


@pytest.mark.parametrize(("mutate", "says"), REFUSAL_PARAMS)
def test_pods_that_reach_the_sidecars_are_not_admitted(
    shared_webhook: dict[str, Any], mutate: Any, says: tuple[str, ...]
) -> None:
    pod = _pod("deployment-pod")
    mutate(pod["spec"])
    status, out = _call(shared_webhook["port"], shared_webhook["ca"], body=_review_body(pod))
    assert status == 200
    response = out["response"]
    assert response["allowed"] is False and "patch" not in response
    assert response["status"]["code"] == 400 and response["status"]["reason"] == "BadRequest"
    message = response["status"]["message"]
    assert message.startswith("sidegate: cannot inject pod apps/chat-7c9f8d6b5-*: ")
    for text in says:
        assert text in message, message


@pytest.mark.parametrize("mutate", ACCEPTED_PARAMS)
def test_pods_close_to_a_refusal_are_admitted(
    shared_webhook: dict[str, Any], mutate: Any
) -> None:
    pod = _pod("deployment-pod")
    mutate(pod["spec"])
    status, out = _call(shared_webhook["port"], shared_webhook["ca"], body=_review_body(pod))
    assert status == 200 and out["response"]["allowed"] is True, out
    admitted = copy.deepcopy(pod)
    admitted["metadata"].pop("managedFields")
    injected = jsonpatch.apply_patch(
        admitted, json.loads(base64.b64decode(out["response"]["patch"]))
    )
    assert [c["name"] for c in injected["spec"]["initContainers"]][:2] == [
        "sidegate-extproc",
        "sidegate-proxy",
    ]
    # Our own mounts of our own volumes do not trip the check on reinvocation.
    status, out = _call(shared_webhook["port"], shared_webhook["ca"], body=_review_body(injected))
    assert status == 200 and out["response"]["allowed"] and "patch" not in out["response"]


@pytest.mark.parametrize(
    ("body", "ctype", "status", "message"),
    [
        (b"{not json", "application/json", 400, "the body is not JSON"),
        (b"[]", "application/json", 400, "expected an AdmissionReview object"),
        (
            b'{"apiVersion": "v1", "kind": "Pod"}',
            "application/json",
            400,
            "expected kind AdmissionReview",
        ),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}',
            "application/json",
            400,
            "no request.uid",
        ),
        (b"{}", "text/plain", 415, "expected Content-Type application/json, got text/plain"),
    ],
)
def test_malformed_requests(
    webhook: dict[str, Any], body: bytes, ctype: str, status: int, message: str
) -> None:
    got, out = _call(webhook["port"], webhook["ca"], body=body, ctype=ctype)
    assert got == status and message in out["error"]


def test_health_and_unknown_paths(webhook: dict[str, Any]) -> None:
    assert _call(webhook["port"], webhook["ca"], "GET", "/healthz")[0] == 200
    assert _call(webhook["port"], webhook["ca"], "POST", "/mutate", b"{}")[0] == 404


def test_the_certificate_names_the_service(webhook: dict[str, Any]) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _call(
            webhook["port"],
            webhook["ca"],
            "GET",
            "/healthz",
            hostname="sidegate-webhook.default.svc",
        )


def test_concurrent_reviews(webhook: dict[str, Any]) -> None:
    pods = [_pod("deployment-pod"), _pod("job-pod"), _pod("own-init-containers")]

    def one(i: int) -> str:
        review = _review(pods[i % 3], uid=f"uid-{i}")
        status, out = _call(webhook["port"], webhook["ca"], body=json.dumps(review).encode())
        assert status == 200 and out["response"]["allowed"]
        return str(out["response"]["uid"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        uids = list(pool.map(one, range(64)))
    assert uids == [f"uid-{i}" for i in range(64)]


def test_a_slow_client_does_not_block_others(webhook: dict[str, Any]) -> None:
    idle = socket.create_connection(("127.0.0.1", webhook["port"]))  # never says a word
    try:
        status, _ = _call(webhook["port"], webhook["ca"], "GET", "/healthz")
        assert status == 200
    finally:
        idle.close()


def test_rotated_certificate_is_served_without_restart(webhook: dict[str, Any]) -> None:
    new = issue([SERVICE], ca_name="rotated-ca")
    _secret_volume(webhook["certs"], new, 2)
    deadline = time.monotonic() + 10
    while True:
        try:
            assert _call(webhook["port"], new.ca_pem, "GET", "/healthz")[0] == 200
            break
        except ssl.SSLError:
            assert time.monotonic() < deadline, "the new certificate was never served"
            time.sleep(0.2)
    with pytest.raises(ssl.SSLCertVerificationError):
        _call(webhook["port"], webhook["ca"], "GET", "/healthz")


def test_inject_serve_command(tmp_path: Path) -> None:
    pair = issue([SERVICE])
    (tmp_path / "tls.crt").write_text(pair.cert_pem)
    (tmp_path / "tls.key").write_text(pair.key_pem)
    (tmp_path / "settings.yaml").write_text("providers: [openai]\nlistenPort: 14001\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "extproc.cli", "inject", "serve", "--host", "127.0.0.1",
            "--port", str(port), "--cert", str(tmp_path / "tls.crt"),
            "--key", str(tmp_path / "tls.key"), "--settings", str(tmp_path / "settings.yaml"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                review = _review(_pod("deployment-pod"))
                status, out = _call(port, pair.ca_pem, body=json.dumps(review).encode())
                assert status == 200
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        patch = json.loads(base64.b64decode(out["response"]["patch"]))
        env = [op for op in patch if "OPENAI_BASE_URL" in json.dumps(op)]
        assert "http://127.0.0.1:14001/v1" in json.dumps(env)
        assert "ANTHROPIC_BASE_URL" not in json.dumps(patch)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def _review_body(pod: dict[str, Any] | None = None, uid: str = "uid-1") -> bytes:
    return json.dumps(_review(pod or _pod("deployment-pod"), uid=uid)).encode()


def test_a_review_over_the_inflight_bound_gets_429_with_retry_after(tmp_path: Path) -> None:
    limits = Limits(max_inflight=1, queue_wait=2.0)
    with _running(tmp_path, limits) as w:
        port, ca, server = w["port"], w["ca"], w["server"]
        assert server.inflight.acquire(timeout=5)  # one review "in progress"
        try:
            start = time.monotonic()
            status, headers, out = _call_full(port, ca, path="/inject", body=_review_body())
            waited = time.monotonic() - start
            assert status == 429 and headers["Retry-After"] == "1", out
            assert "busy" in out["error"]
            # It queued for the configured wait, then refused: no hang, no instant drop.
            assert 1.9 <= waited < 6, waited
            # With the API server's own timeout stated, the wait is 40% of it: its
            # retry after Retry-After still fits in that timeout.
            start = time.monotonic()
            status, _, _ = _call_full(port, ca, path="/inject?timeout=1s", body=_review_body())
            waited = time.monotonic() - start
            assert status == 429 and 0.3 <= waited < 1.5, waited
            # Health is not queued behind reviews.
            assert _call(port, ca, "GET", "/healthz")[0] == 200
        finally:
            server.inflight.release()
        status, out = _call(port, ca, body=_review_body(uid="after"))
        assert status == 200 and out["response"]["uid"] == "after"


def test_a_queued_review_is_served_when_a_slot_frees_in_time(tmp_path: Path) -> None:
    with _running(tmp_path, Limits(max_inflight=1, queue_wait=5)) as w:
        server = w["server"]
        slots = server.inflight
        queued = threading.Event()

        class Watched:
            """The server's semaphore, telling the test when a review has to wait."""

            def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
                if slots.acquire(blocking=False):
                    return True
                queued.set()
                return bool(slots.acquire(blocking, timeout))

            def release(self) -> None:
                slots.release()

        server.inflight = Watched()
        assert slots.acquire(timeout=5)  # the only slot is busy
        result: list[tuple[int, Any]] = []
        caller = threading.Thread(
            target=lambda: result.append(_call(w["port"], w["ca"], body=_review_body(uid="queued")))
        )
        caller.start()
        try:
            assert queued.wait(10), "the review never waited for the busy slot"
        finally:
            slots.release()
            caller.join(15)
        ((status, out),) = result
        assert status == 200 and out["response"]["uid"] == "queued"


def test_connections_are_bounded_and_silent_ones_time_out(tmp_path: Path) -> None:
    limits = Limits(max_connections=3, request_timeout=1.0)
    with _running(tmp_path, limits) as w:
        before = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", w["port"])) for _ in range(20)]
        try:
            deadline = time.monotonic() + 5
            peak = 0
            while time.monotonic() < deadline:
                peak = max(peak, threading.active_count() - before)
                if peak >= 3:
                    break
                time.sleep(0.05)
            time.sleep(0.3)
            peak = max(peak, threading.active_count() - before)
            assert peak == 3, f"{peak} handler threads for 20 connections; the bound is 3"
            # Each silent connection is closed after request_timeout, so a real
            # client behind 20 of them is served within a few rounds of that.
            start = time.monotonic()
            status, _ = _call(w["port"], w["ca"], body=_review_body())
            assert status == 200
            assert time.monotonic() - start < 15
        finally:
            for s in idle:
                s.close()


def test_a_client_dripping_its_request_is_cut_off_at_the_deadline(tmp_path: Path) -> None:
    with _running(tmp_path, Limits(request_timeout=1.0)) as w:
        ctx = ssl.create_default_context(cadata=w["ca"])
        raw = socket.create_connection(("127.0.0.1", w["port"]), timeout=10)
        tls = ctx.wrap_socket(raw, server_hostname=SERVICE)
        start = time.monotonic()
        request = b"POST /inject HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        try:
            for byte in request:
                tls.sendall(bytes([byte]))  # a byte every 0.2 s: each read is quick
                time.sleep(0.2)
                assert time.monotonic() - start < 5, "the server never cut the client off"
        except OSError:
            pass  # the server closed the connection
        else:
            assert tls.recv(1) == b""
        assert time.monotonic() - start < 3, time.monotonic() - start
        tls.close()


def test_adversarial_annotations_are_refused_quickly_and_briefly(webhook: dict[str, Any]) -> None:
    pod = _pod("deployment-pod")
    pod["metadata"]["annotations"].update(
        {
            "sidegate.io/proxy-memory": "1" * (1024 * 1024),
            "sidegate.io/capture-ports": "8" * (512 * 1024),
            "sidegate.io/" + "x" * 10_000: "y",
            "sidegate.io/secret-name": ["not", "a", "string"],
        }
    )
    start = time.monotonic()
    status, out = _call(webhook["port"], webhook["ca"], body=_review_body(pod))
    elapsed = time.monotonic() - start
    assert status == 200 and out["response"]["allowed"] is False
    message = out["response"]["status"]["message"]
    assert "annotation sidegate.io/proxy-memory: 1048576 characters; at most 64" in message
    assert "annotation sidegate.io/capture-ports: 524288 characters; at most 256" in message
    assert "the key is longer than 317 characters" in message
    assert "annotation sidegate.io/secret-name: expected a string, got list" in message
    assert len(message) < 2000, "the refusal quotes an unbounded value"
    assert elapsed < 5, elapsed


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nests deeper than 100 levels"),
        (
            json.dumps(
                {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                 "request": {"uid": "u" * 1000}}
            ).encode(),
            "request.uid is empty or longer than 128",
        ),
    ],
)  # fmt: skip
def test_hostile_review_bodies_are_400(webhook: dict[str, Any], body: bytes, message: str) -> None:
    status, out = _call(webhook["port"], webhook["ca"], body=body)
    assert status == 400 and message in out["error"]


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda r: r["request"].update(kind="Pod"), None),
        (lambda r: r["request"]["object"].update(metadata=[]), "metadata: expected a map"),
        (
            lambda r: r["request"]["object"]["metadata"].update(annotations="x"),
            "metadata.annotations: expected a map of strings",
        ),
        (
            lambda r: r["request"]["object"]["spec"].update(containers={"a": 1}),
            "spec.containers: expected a list of maps, each with a name",
        ),
    ],
)
def test_misshapen_pods_are_refused_not_crashed_on(
    webhook: dict[str, Any], mutate: Any, problem: str | None
) -> None:
    review = _review(_pod("deployment-pod"))
    mutate(review)
    status, out = _call(webhook["port"], webhook["ca"], body=json.dumps(review).encode())
    assert status == 200
    if problem is None:
        assert out["response"]["allowed"] is True and "patch" not in out["response"]
    else:
        assert out["response"]["allowed"] is False
        assert problem in out["response"]["status"]["message"]
