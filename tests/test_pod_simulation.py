"""The injected pod, run: sidecars and app as processes in their own network namespace.

The app is the official openai / anthropic SDK configured only by the env the
injector set; the providers are fakes in another network namespace, reached
over a veth pair, and accept only the real key, which only the ext_proc
container can read. Covers startup order and gating, a streamed completion,
key rotation without restart, and transparent capture with iptables.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc.envoy.admin import request as admin_request
from extproc.inject.pod import inject
from extproc.inject.settings import Settings
from tests.ci import skip_or_fail
from tests.podsim import POD_IP, PROVIDER_IP, Network, Pod, kubelet_volume, netns_missing


@pytest.fixture(autouse=True, scope="module")
def _needs_netns() -> None:
    missing = netns_missing()
    if missing:
        skip_or_fail(missing)


APP = r"""
import json, os, sys, time
import anthropic, openai
out = {"env_key": os.environ.get("OPENAI_API_KEY")}
long = "--long" in sys.argv
args = [a for a in sys.argv[1:] if a != "--long"]
base_url = args[0] if args else None
client = openai.OpenAI(base_url=base_url, api_key="sk-app-knows-no-key") if base_url else openai.OpenAI()
start, arrivals, text = time.monotonic(), [], []
stream = client.chat.completions.create(
    model="fast", messages=[{"role": "user", "content": "word " * 60 if long else "stream please"}],
    stream=True, extra_headers={"x-fake-fault-openai": "chunk_delay=0.05" if long else "chunk_delay=0.05"},
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        arrivals.append(time.monotonic() - start)
        text.append(chunk.choices[0].delta.content)
out["openai"] = "".join(text)
out["arrivals"] = arrivals
if not base_url and not long:
    msg = anthropic.Anthropic().messages.create(
        model="claude", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    out["anthropic"] = msg.content[0].text
print(json.dumps(out))
"""


def _config() -> str:
    return yaml.safe_dump(
        {
            "providers": {
                "openai": {
                    "api": "openai",
                    "base_url": f"http://{PROVIDER_IP}/v1",
                    "keys": [{"file": "/var/run/secrets/sidegate/keys/openai"}],
                },
                "anthropic": {
                    "api": "anthropic",
                    "base_url": f"http://{PROVIDER_IP}:8080",
                    "keys": [{"file": "/var/run/secrets/sidegate/keys/anthropic"}],
                },
            },
            "models": {
                "gpt": {"provider": "openai", "id": "gpt-4o-mini"},
                "sonnet": {"provider": "anthropic", "id": "claude-sonnet-4-5"},
            },
            "routes": {"fast": [["gpt"]], "claude": [["sonnet"]]},
            "forward_headers": {"allow": ["x-fake-fault-*"]},
        }
    )


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.net = Network()
        self.accepted = tmp / "accepted"
        self.accepted.mkdir()
        self.fakes: list[subprocess.Popen[bytes]] = []
        for api, port in (("openai", 80), ("anthropic", 8080)):
            (self.accepted / api).write_text("sk-real-1\n")
            self.fakes.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", self.net.provider, sys.executable, "-m", "extproc.cli", "fake-provider",
                     "--api", api, "--host", PROVIDER_IP, "--port", str(port), "--name", api,
                     "--key-file", str(self.accepted / api)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip

    def pod(self, annotations: dict[str, str]) -> tuple[Pod, dict[str, Any]]:
        code = self.tmp / "app-code"
        code.mkdir()
        code.chmod(0o755)
        (code / "app.py").write_text(APP)
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sim", "namespace": "apps", "annotations": annotations},
            "spec": {
                "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
                "containers": [
                    {
                        "name": "app",
                        "image": "app",
                        "command": ["python", "/app/app.py"],
                        "volumeMounts": [
                            {"name": "app-code", "mountPath": "/app", "readOnly": True}
                        ],
                    }
                ],
                "volumes": [{"name": "app-code", "emptyDir": {}}],
            },
        }
        injected = inject(manifest, "apps", Settings()).pod
        volumes = {
            name: self.tmp / name for name in ("sidegate-run", "sidegate-config", "sidegate-keys")
        }
        for path in volumes.values():
            path.mkdir()
            path.chmod(0o777)
        volumes["app-code"] = code
        kubelet_volume(volumes["sidegate-config"], {"sidegate.yaml": _config()}, 1)
        kubelet_volume(
            volumes["sidegate-keys"], {"openai": "sk-real-1\n", "anthropic": "sk-real-1\n"}, 1
        )
        for f in (volumes["sidegate-keys"] / "..data").iterdir():
            f.chmod(0o644)
        return Pod(self.net, injected["spec"], volumes, self.tmp), injected

    def close(self) -> None:
        for f in self.fakes:
            f.terminate()
            f.wait(timeout=10)
        self.net.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    tmp_path.chmod(0o755)
    c = Cluster(tmp_path)
    yield c
    c.close()


def _app(pod: Pod, spec: dict[str, Any], *args: str) -> dict[str, Any]:
    app = next(c for c in spec["containers"] if c["name"] == "app")
    r = pod.exec(app, [*app["command"], *args], timeout=60)
    assert r.returncode == 0, (
        f"{r.stderr}\n--- extproc\n{pod.log('sidegate-extproc')}\n--- proxy\n{pod.log('sidegate-proxy')}"
    )
    result: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def test_native_pod_streams_and_rotates_keys(cluster: Cluster) -> None:
    pod, injected = cluster.pod({"sidegate.io/providers": "openai,anthropic"})
    try:
        order = pod.run_init()
        assert order == ["sidegate-extproc", "sidegate-proxy"]
        # The readiness port answers /ready and nothing of the admin API.
        proxy = injected["spec"]["initContainers"][1]
        assert pod.probe(proxy, proxy["readinessProbe"])
        assert not pod.probe(proxy, {"httpGet": {"path": "/stats", "port": 15021}})

        out = _app(pod, injected["spec"])
        assert out["env_key"] == "sidegate-injects-the-key"  # the app never had the real key
        assert out["openai"].startswith("Hello from openai!")
        assert out["anthropic"].startswith("Hello from anthropic!")
        arrivals = out["arrivals"]
        assert arrivals[-1] - arrivals[0] >= 0.05 * (len(arrivals) - 1) * 0.8, (
            "the stream was buffered"
        )
        # What the injected scrape annotations point at, as Prometheus would fetch it.
        annotations = injected["metadata"]["annotations"]
        metrics = _scrape(pod, annotations["prometheus.io/port"], annotations["prometheus.io/path"])
        assert "sidegate_envoy_stats_up 1.0" in metrics
        assert 'envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="sidegate"}' in metrics
        assert "sk-real" not in metrics

        # Rotation: the provider now takes only the new key; the kubelet swaps ..data.
        pids = {n: p.pid for n, p in pod.procs.items()}
        for api in ("openai", "anthropic"):
            (cluster.accepted / api).write_text("sk-real-2\n")
        kubelet_volume(
            pod.volumes["sidegate-keys"], {"openai": "sk-real-2\n", "anthropic": "sk-real-2\n"}, 2
        )
        for f in (pod.volumes["sidegate-keys"] / "..data").iterdir():
            f.chmod(0o644)
        time.sleep(1.2)  # keys are re-checked at most once a second
        out = _app(pod, injected["spec"])
        assert out["openai"].startswith("Hello from openai!")
        assert {n: p.pid for n, p in pod.procs.items()} == pids
        assert all(p.poll() is None for p in pod.procs.values()), "a sidecar restarted"
        assert "sk-real" not in pod.log("sidegate-extproc") + pod.log("sidegate-proxy")
    finally:
        pod.stop()


def test_transparent_capture(cluster: Cluster) -> None:
    if shutil.which("iptables-restore") is None:
        skip_or_fail("needs iptables (.ci/run installs it)")
    pod, injected = cluster.pod(
        {"sidegate.io/capture": "iptables", "sidegate.io/providers": "openai"}
    )
    try:
        order = pod.run_init()
        assert order == ["sidegate-capture", "sidegate-extproc", "sidegate-proxy"]
        rules = subprocess.run(
            ["ip", "netns", "exec", cluster.net.pod, "iptables", "-t", "nat", "-S", "SIDEGATE_OUTPUT"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert (
            "--uid-owner 1337 -j RETURN" in rules
            and "--dport 80 -j REDIRECT --to-ports 14000" in rules
        )
        # An app that ignores the env and calls the provider directly, over plain
        # HTTP, with a key of its own: captured, and the real key is injected.
        out = _app(pod, injected["spec"], f"http://{PROVIDER_IP}/v1")
        assert out["openai"].startswith("Hello from openai!")
        # Re-running the init container (a pod restart) does not duplicate rules.
        capture = injected["spec"]["initContainers"][0]
        assert pod.exec(capture, ["sidegate", *capture["args"]]).returncode == 0
        jumps = subprocess.run(
            ["ip", "netns", "exec", cluster.net.pod, "iptables", "-t", "nat", "-S", "OUTPUT"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert jumps.count("SIDEGATE_OUTPUT") == 1
    finally:
        pod.stop()


def test_legacy_pod_starts_in_order_and_drains_a_stream_on_shutdown(cluster: Cluster) -> None:
    pod, injected = cluster.pod(
        {
            "sidegate.io/native-sidecar": "false",
            "sidegate.io/drain-seconds": "6",
            "sidegate.io/providers": "openai",
        }
    )
    spec = injected["spec"]
    extproc, proxy, app = spec["containers"]
    assert [extproc["name"], proxy["name"]] == ["sidegate-extproc", "sidegate-proxy"]
    try:
        # The kubelet starts containers in order and runs each postStart to
        # completion before starting the next one.
        for c in (extproc, proxy):
            pod.start(c)
            hook = pod.exec(c, c["lifecycle"]["postStart"]["exec"]["command"], timeout=150)
            assert hook.returncode == 0, (
                f"{c['name']} postStart failed: {hook.stderr}\n{pod.log(c['name'])}"
            )
        assert pod.probe(proxy, proxy["readinessProbe"]), (
            "the app would start before Envoy is ready"
        )

        # Pod deletion mid-stream: every container gets SIGTERM at once, after
        # the proxy's preStop (drain, then wait) has run.
        stream = subprocess.Popen(
            pod._argv(app, [*app["command"], "--long"]), env=pod._env(app),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        # The stream under way (the SDK's import alone can take seconds on a busy machine).
        admin = str(pod.volumes["sidegate-run"] / "envoy-admin.sock")

        def streaming() -> bool:
            assert stream.poll() is None, stream.communicate()
            answer = admin_request(admin, "GET", "/stats?filter=^http.sidegate.downstream_rq_active$")
            return answer is not None and answer[1].strip().endswith(": 1")

        _until("the stream under way", streaming, timeout=60)
        pod.procs["sidegate-extproc"].terminate()
        pre_stop = pod.exec(proxy, proxy["lifecycle"]["preStop"]["exec"]["command"], timeout=30)
        assert pre_stop.returncode == 0, pre_stop.stderr
        # The ext_proc took the preStop's request and drained Envoy's listeners.
        assert "Envoy listeners draining: yes" in pod.log("sidegate-extproc")
        assert not (pod.volumes["sidegate-run"] / "drain-request").exists()
        pod.procs["sidegate-proxy"].terminate()
        out, err = stream.communicate(timeout=30)
        assert stream.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        assert result["openai"].startswith("Hello from openai!") and len(result["arrivals"]) > 50
        assert pod.procs["sidegate-extproc"].wait(timeout=15) == 0
    finally:
        pod.stop()


REACH = r"""
import json, socket
out = {}
for name, path in (("extproc", "/run/sidegate/extproc.sock"),
                   ("admin", "/run/sidegate/envoy-admin.sock"),
                   ("metrics", "/run/sidegate/metrics.sock")):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        out[name] = "connected"
    except OSError as e:
        out[name] = type(e).__name__
    finally:
        s.close()
print(json.dumps(out))
"""


def _reach(pod: Pod, container: dict[str, Any]) -> dict[str, str]:
    r = pod.exec(container, ["python", "-c", REACH])
    assert r.returncode == 0, r.stderr
    result: dict[str, str] = json.loads(r.stdout)
    return result


def _listening_ports(net: Network) -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        text = subprocess.run(
            ["ip", "netns", "exec", net.pod, "cat", table], capture_output=True, text=True
        ).stdout
        for line in text.splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_the_app_reaches_neither_the_admin_api_nor_the_extproc_socket(cluster: Cluster) -> None:
    pod, injected = cluster.pod({"sidegate.io/providers": "openai"})
    try:
        pod.run_init()
        spec = injected["spec"]
        app = next(c for c in spec["containers"] if c["name"] == "app")
        proxy = next(c for c in spec["initContainers"] if c["name"] == "sidegate-proxy")
        # On the pod's shared loopback: the app listener and /ready, no admin port.
        assert _listening_ports(cluster.net) == {14000, 15021}
        # The app does not mount the run volume: the sockets are not there for it.
        gone = "FileNotFoundError"
        assert _reach(pod, app) == {"extproc": gone, "admin": gone, "metrics": gone}
        # An app that mounts it anyway (another uid) is refused by the sockets' mode.
        nosy = {**app, "volumeMounts": [*app["volumeMounts"], *proxy["volumeMounts"]]}
        denied = "PermissionError"
        assert _reach(pod, nosy) == {"extproc": denied, "admin": denied, "metrics": denied}
        # The sidecars' uid gets through: the test can tell the difference.
        assert _reach(pod, proxy) == {
            "extproc": "connected", "admin": "connected", "metrics": "connected"
        }
    finally:
        pod.stop()


CALL = r"""
import json, anthropic, openai
out = {}
for name, call in (
    ("openai", lambda: openai.OpenAI(max_retries=0).chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "hi"}])),
    ("anthropic", lambda: anthropic.Anthropic(max_retries=0).messages.create(
        model="claude", max_tokens=16, messages=[{"role": "user", "content": "hi"}])),
):
    try:
        call()
        out[name] = [200, None, None]
    except (openai.APIStatusError, anthropic.APIStatusError) as e:
        out[name] = [e.status_code, e.response.json(), e.response.headers.get("retry-after")]
print(json.dumps(out))
"""


def _ready_status(pod: Pod) -> int:
    code = (
        "import sys, urllib.request as u, urllib.error as e\n"
        "try: print(u.urlopen(sys.argv[1], timeout=1).status)\n"
        "except e.HTTPError as x: print(x.code)\n"
        "except OSError: print(0)\n"
    )
    r = subprocess.run(
        ["ip", "netns", "exec", pod.net.pod, sys.executable, "-c", code,
         f"http://{POD_IP}:15021/ready"],
        capture_output=True, text=True,
    )  # fmt: skip
    return int(r.stdout.strip() or 0)


def _scrape(pod: Pod, port: str, path: str) -> str:
    """GET the pod's metrics from outside the pod, as Prometheus does."""
    code = "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=5).read().decode())"
    r = subprocess.run(
        ["ip", "netns", "exec", pod.net.pod, sys.executable, "-c", code,
         f"http://{POD_IP}:{port}{path}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def _until(what: str, check: Any, timeout: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"{what} not within {timeout:g} s"
        time.sleep(0.1)
    return time.monotonic() - started


def test_killed_extproc_makes_the_pod_unready_and_requests_503(cluster: Cluster) -> None:
    pod, injected = cluster.pod({"sidegate.io/providers": "openai,anthropic"})
    try:
        pod.run_init()
        spec = injected["spec"]
        app = next(c for c in spec["containers"] if c["name"] == "app")
        extproc = next(c for c in spec["initContainers"] if c["name"] == "sidegate-extproc")
        assert _ready_status(pod) == 200

        pod.procs["sidegate-extproc"].kill()
        pod.procs["sidegate-extproc"].wait(timeout=10)
        took = _until("/ready 503", lambda: _ready_status(pod) == 503, timeout=10)
        print(f"ext_proc killed: /ready 503 after {took:.2f} s")
        r = pod.exec(app, ["python", "-c", CALL])
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout.strip().splitlines()[-1])
        status, body, retry_after = out["openai"]
        assert status == 503 and retry_after == "1", out
        assert body["error"]["code"] == "extproc_unavailable"
        assert "unavailable" in body["error"]["message"]
        status, body, retry_after = out["anthropic"]
        assert status == 503 and retry_after == "1", out
        assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"

        # The kubelet restarts the container (restartPolicy: Always).
        pod.start(extproc)
        took = _until("/ready 200", lambda: _ready_status(pod) == 200, timeout=20)
        print(f"ext_proc restarted: /ready 200 after {took:.2f} s")
        r = pod.exec(app, ["python", "-c", CALL])
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out["openai"][0] == 200 and out["anthropic"][0] == 200, out
    finally:
        pod.stop()
