"""The ``sidegate`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .config import ConfigError, GatewayConfig, load_config
from .gateway import Gateway

DESCRIPTION = """\
An AI API gateway beside every pod: Envoy takes the app's OpenAI and Anthropic
SDK traffic on 127.0.0.1 and a Python ext_proc service decides, per request,
which provider and model answer it, how to translate it, and which key to use.

Start with:  sidegate run -c sidegate.yaml   (then point the SDK's base URL at
http://127.0.0.1:14000/v1 or http://127.0.0.1:14000/anthropic).
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, unless it has none worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or default in (None, False, argparse.SUPPRESS)
            or action.option_strings == []
            or isinstance(default, bool)
        ):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list) else "%(default)s"
        return f"{text} (default: {shown})"


def _overrides(args: argparse.Namespace) -> Callable[[GatewayConfig], GatewayConfig]:
    """Command-line overrides, applied at start and again to every reloaded config."""
    port = getattr(args, "port", None)

    def adjust(config: GatewayConfig) -> GatewayConfig:
        if port:
            config = dataclasses.replace(
                config, listen=dataclasses.replace(config.listen, port=port)
            )
        return config

    return adjust


def _load(args: argparse.Namespace) -> GatewayConfig:
    return _overrides(args)(load_config(args.config))


def _cmd_run(args: argparse.Namespace) -> int:
    from .provider_check import warn_unresolved
    from .runner import run

    config = _load(args)
    warn_unresolved(config)
    return run(
        config,
        config_path=args.config,
        socket_path=args.socket,
        ready_file=args.ready_file,
        adjust=_overrides(args),
        ready_port=args.ready_port or None,
    )


def _port_in_use(
    address: str, port: int, hint: str = "--port or listen.port in the config"
) -> str | None:
    """Why the app listener cannot bind, checked before Envoy would only log it."""
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
        # As Envoy binds: a port left in TIME_WAIT is free, one with a listener is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as e:
            return (
                f"cannot listen on {address}:{port}: {e.strerror} (another sidegate or "
                f"program has it; stop it, or pick another port with {hint})"
            )
    return None


def _cmd_extproc(args: argparse.Namespace) -> int:
    from .provider_check import warn_unresolved
    from .runner import SidecarOptions, serve_extproc

    opts = SidecarOptions(
        socket=args.socket,
        admin_socket=args.admin_socket,
        envoy_dir=args.envoy_dir,
        ready_port=args.ready_port or None,
        drain_seconds=args.drain_seconds,
        drain_file=args.drain_file,
    )
    config = _load(args)
    warn_unresolved(config)
    return serve_extproc(config, opts, config_path=args.config)


def _cmd_health(args: argparse.Namespace) -> int:
    from .health import wait

    found = wait(args.socket, args.envoy_dir, timeout=1.0, wait_seconds=args.wait)
    if found:
        print(f"sidegate: unhealthy: {found}", file=sys.stderr)
        return 1
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    gateway = Gateway(config)
    problems = [p for ring in gateway.keys.values() for p in ring.check()]
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    redis = config.quota.state.redis
    state = f"shared in Redis ({redis.describe()})" if redis else "in memory"
    summary = (
        f"{len(config.providers)} providers, {len(config.models)} models, "
        f"{len(config.routes)} routes ({len(gateway.plans)} Envoy routes), "
        f"{len(config.quota.quotas)} quotas counted {state}"
    )
    failed = bool(problems) and args.strict
    if failed:
        print(
            f"{args.config}: FAILED (--strict) — {len(problems)} key sources unusable; {summary}"
        )
    else:
        print(f"{args.config}: OK — {summary}")
    if args.probe:
        from .provider_check import check_providers

        reports = check_providers(config, timeout=args.timeout)
        for report in reports:
            for line in report.lines():
                print(line)
        bad = [r.provider for r in reports if not r.ok]
        if bad:
            print(f"probe: not ready: {', '.join(bad)}", file=sys.stderr)
            return 1
    return 1 if failed else 0


def _cmd_render(args: argparse.Namespace) -> int:
    from .envoy.bootstrap import render_yaml

    sys.stdout.write(
        render_yaml(_load(args), args.socket or "/run/sidegate/extproc.sock", args.admin_socket)
    )
    return 0


def _cmd_inject(args: argparse.Namespace) -> int:
    from .inject.annotations import AnnotationError
    from .inject.offline import ManifestError, dump_documents, inject_documents
    from .inject.settings import SettingsError, load_settings

    if args.inject_command == "serve":
        return _cmd_inject_serve(args)
    if args.inject_command == "probe":
        from .inject.probe import probe

        try:
            print(probe(args.url, args.ca_file))
        except RuntimeError as e:
            print(f"sidegate inject probe: {e}", file=sys.stderr)
            return 1
        return 0
    if not args.filename:
        print(
            "sidegate inject: give -f FILE (or - for stdin), or use 'inject serve'", file=sys.stderr
        )
        return 2
    try:
        settings = load_settings(args.settings)
        text = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text()
        docs, notes = inject_documents(text, settings, args.namespace)
    except (SettingsError, AnnotationError, ManifestError, OSError) as e:
        print(f"sidegate inject: {e}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"sidegate inject: {note}", file=sys.stderr)
    sys.stdout.write(dump_documents(docs))
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _cmd_inject_serve(args: argparse.Namespace) -> int:
    from .inject.webhook import Limits, serve

    limits = Limits(max_connections=args.max_connections, max_inflight=args.max_inflight)
    server = serve(args.host, args.port, args.cert, args.key, args.settings, limits)
    logging.getLogger("sidegate.inject").info(
        "injector webhook on https://%s:%d/inject", args.host, server.server_address[1]
    )
    import signal
    import threading

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    server.server_close()
    return 0


def _cmd_capture(args: argparse.Namespace) -> int:
    from .inject.capture import CaptureError, install

    try:
        ports = tuple(int(p) for p in args.ports.split(",") if p.strip())
        for line in install(args.proxy_uid, args.to_port, ports):
            print(f"sidegate capture: {line}")
    except (CaptureError, ValueError) as e:
        print(f"sidegate capture: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_fake(args: argparse.Namespace) -> int:
    from .devtools.fake_provider import serve_forever

    busy = _port_in_use(args.host, args.port, "--port") if args.port else None
    if busy:
        print(f"sidegate fake-provider: {busy}", file=sys.stderr)
        return 1
    serve_forever(
        api=args.api,
        host=args.host,
        port=args.port,
        name=args.name,
        key=args.key,
        key_file=args.key_file,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.soak is not None:
        from .devtools.soak import main as soak_main

        return soak_main(args)
    from .devtools.bench import main as bench_main

    return int(bench_main(args))


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from .audit.verify_cli import run_verify

    return run_verify(
        args.files, partial=args.partial, key_env=args.key_env, key_file=args.key_file
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidegate", description=DESCRIPTION, formatter_class=_HelpFormatter
    )
    parser.add_argument("-V", "--version", action="version", version=f"sidegate {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        group: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(
            name, help=text, description=text, formatter_class=_HelpFormatter
        )
        return p

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", required=True, help="the gateway config (YAML)")

    p = command(sub, "run", "run Envoy and the ext_proc service locally")
    with_config(p)
    p.add_argument("--port", type=int, help="app listener port (overrides listen.port)")
    p.add_argument(
        "--socket",
        help="the ext_proc's Unix socket (default: extproc.socket, else a private temp dir)",
    )
    p.add_argument(
        "--ready-file",
        help="once ready, write the base URL and Envoy's admin URL here, one a line "
        "(for scripts that wait on the gateway)",
    )
    p.add_argument(
        "--ready-port",
        type=int,
        default=0,
        help="serve /ready and the Prometheus scrape path (telemetry.prometheus.path) on this "
        "port, on listen.address (0: none)",
    )
    p.set_defaults(func=_cmd_run)

    p = command(sub, "extproc", "serve only the ext_proc service (the sidecar's container)")
    with_config(p)
    p.add_argument(
        "--socket",
        default="/run/sidegate/extproc.sock",
        help="the Unix socket Envoy reaches the ext_proc on",
    )
    p.add_argument(
        "--envoy-dir",
        help="write Envoy's bootstrap and watched listener/cluster files here (sidecar mode)",
    )
    p.add_argument(
        "--admin-socket",
        default="/run/sidegate/envoy-admin.sock",
        help="Envoy's admin Unix socket (mode 0600; Envoy creates it)",
    )
    p.add_argument(
        "--ready-port",
        type=int,
        default=15021,
        help="Envoy's probe port: /ready and the Prometheus scrape path (0: none)",
    )
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=0.0,
        help="keep serving this long after SIGTERM while Envoy drains",
    )
    p.add_argument(
        "--drain-file", help="when this file appears, drain Envoy's listeners (legacy preStop)"
    )
    p.set_defaults(func=_cmd_extproc)

    p = command(sub, "health", "exit 0 when the ext_proc serves (a startup probe)")
    p.add_argument(
        "--socket", default="/run/sidegate/extproc.sock", help="the ext_proc's Unix socket"
    )
    p.add_argument("--envoy-dir", help="also require Envoy's files here")
    p.add_argument("--wait", type=float, default=0.0, help="keep trying this many seconds")
    p.set_defaults(func=_cmd_health)

    cfg = command(sub, "config", "check or render a gateway config").add_subparsers(
        dest="config_command", required=True, metavar="COMMAND"
    )
    p = command(cfg, "check", "validate the config and its key sources")
    with_config(p)
    p.add_argument(
        "--strict", action="store_true", help="fail when a key source is unusable"
    )
    p.add_argument(
        "--probe",
        action="store_true",
        help="also resolve and connect to every provider (TCP, TLS) and ask it whether "
        "each key is accepted (GET /models); keys are never printed",
    )
    p.add_argument(
        "--timeout", type=float, default=5.0, help="seconds per network step of --probe"
    )
    p.set_defaults(func=_cmd_check)
    p = command(cfg, "render", "print the generated Envoy bootstrap")
    with_config(p)
    p.add_argument("--port", type=int, help="app listener port (overrides listen.port)")
    p.add_argument(
        "--socket",
        default="/run/sidegate/extproc.sock",
        help="the ext_proc socket path to render",
    )
    p.add_argument(
        "--admin-socket", help="Envoy admin socket to render (default: beside the ext_proc's)"
    )
    p.set_defaults(func=_cmd_render)

    p = command(sub, "inject", "inject the sidecar into manifests, or serve the webhook")
    p.add_argument("-f", "--filename", help="Pod or workload YAML to inject ('-': stdin)")
    p.add_argument("-n", "--namespace", default="default", help="namespace for objects without one")
    p.add_argument("--settings", help="injector settings YAML (the chart's injector ConfigMap)")
    p.set_defaults(func=_cmd_inject, inject_command=None)
    inject_sub = p.add_subparsers(dest="inject_command", metavar="COMMAND")
    serve_p = command(inject_sub, "serve", "the HTTPS admission webhook")
    serve_p.add_argument("--host", default="0.0.0.0", help="address to listen on")
    serve_p.add_argument("--port", type=int, default=8443, help="HTTPS port")
    serve_p.add_argument(
        "--cert",
        default="/etc/sidegate/webhook-tls/tls.crt",
        help="serving certificate (PEM), re-read on change",
    )
    serve_p.add_argument(
        "--key",
        default="/etc/sidegate/webhook-tls/tls.key",
        help="its private key (PEM), re-read on change",
    )
    serve_p.add_argument("--settings", help="injector settings YAML, re-read on change")
    serve_p.add_argument(
        "--max-connections", type=_positive, default=128, help="open connections served at once"
    )
    serve_p.add_argument(
        "--max-inflight", type=_positive, default=4, help="reviews injected at once; more get 429"
    )
    probe_p = command(inject_sub, "probe", "check a running webhook end to end")
    probe_p.add_argument("--url", required=True, help="https://<service>.<ns>.svc:443/inject")
    probe_p.add_argument("--ca-file", required=True, help="the CA the API server trusts")

    p = command(sub, "capture", "transparent capture (the capture init container)")
    cap = p.add_subparsers(dest="capture_command", required=True, metavar="COMMAND")
    p = command(cap, "install", "install the iptables REDIRECT rules")
    p.add_argument(
        "--proxy-uid",
        type=int,
        default=1337,
        help="the UID Envoy runs as; its own traffic is not redirected",
    )
    p.add_argument("--to-port", type=int, default=14000, help="the sidecar's app listener port")
    p.add_argument("--ports", default="80", help="comma list of TCP ports to capture")
    p.set_defaults(func=_cmd_capture)

    audit = command(sub, "audit", "work with the audit log").add_subparsers(
        dest="audit_command", required=True, metavar="COMMAND"
    )
    p = command(
        audit,
        "verify",
        "check the hash chain of an audit log across its rotated files; exit 0 when intact, "
        "1 naming each edited, deleted, inserted or reordered record, 2 when a file or the "
        "chain key cannot be read",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="the log's files, in any order")
    p.add_argument(
        "--partial",
        action="store_true",
        help="accept a log that begins mid-chain (a part of a log, copied out)",
    )
    key = p.add_mutually_exclusive_group()
    key.add_argument("--key-env", help="the chain key (audit.chain_key) is in this variable")
    key.add_argument("--key-file", help="the chain key (audit.chain_key) is in this file")
    p.set_defaults(func=_cmd_audit_verify)

    p = command(sub, "fake-provider", "a local provider that speaks the real wire format")
    p.add_argument(
        "--api", choices=["openai", "anthropic"], required=True, help="the wire format to speak"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, required=True, help="port to listen on (0: any free)")
    p.add_argument("--name", default="fake", help="selects x-fake-fault-<name> fault headers")
    p.add_argument("--key", help="require this API key (default: accept any)")
    p.add_argument(
        "--key-file", help="accept the keys in this file (one a line; re-read per request)"
    )
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM)")
    p.add_argument("--tls-key", help="the private key of --tls-cert (PEM)")
    p.set_defaults(func=_cmd_fake)

    p = command(sub, "bench", "measure sidegate's added latency against Envoy alone and direct")
    p.add_argument("--requests", type=int, default=2000, help="requests per scenario")
    p.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 32],
        help="concurrent clients; each value is a scenario",
    )
    p.add_argument("--json", help="also write the results here")
    p.add_argument(
        "--no-quotas",
        dest="quotas",
        action="store_false",
        help="skip the gateway with quotas counted in memory",
    )
    p.add_argument(
        "--no-audit",
        dest="audit",
        action="store_false",
        help="skip the gateway with the durable audit log (a file, fsynced per response)",
    )
    p.add_argument(
        "--no-telemetry",
        dest="telemetry",
        action="store_false",
        help="skip the gateway with traces and metrics exported over OTLP to a local sink",
    )
    p.add_argument("--redis-url", help="also measure quotas counted in this Redis")
    p.add_argument(
        "--soak", type=_positive, metavar="N", help="instead: the ext_proc's RSS over N requests"
    )
    p.add_argument(
        "--soak-every", type=_positive, default=10000, help="RSS sample interval (--soak)"
    )
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # sidegate forks only to exec Envoy: gRPC's fork handlers have nothing to
    # do, and with them on every start logs "skipping fork() handlers".
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"sidegate: invalid config: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
