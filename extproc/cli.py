"""The ``sidegate`` command."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from .config import ConfigError, GatewayConfig, load_config
from .gateway import Gateway


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
    from .runner import run

    return run(
        _load(args),
        config_path=args.config,
        socket_path=args.socket,
        ready_file=args.ready_file,
        adjust=_overrides(args),
    )


def _cmd_extproc(args: argparse.Namespace) -> int:
    from .runner import SidecarOptions, serve_extproc

    opts = SidecarOptions(
        socket=args.socket,
        admin_socket=args.admin_socket,
        envoy_dir=args.envoy_dir,
        ready_port=args.ready_port or None,
        drain_seconds=args.drain_seconds,
        drain_file=args.drain_file,
    )
    return serve_extproc(_load(args), opts, config_path=args.config)


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
    print(
        f"{args.config}: OK — {len(config.providers)} providers, {len(config.models)} models, "
        f"{len(config.routes)} routes ({len(gateway.plans)} Envoy routes), "
        f"{len(config.quota.quotas)} quotas counted {state}"
    )
    return 1 if problems and args.strict else 0


def _cmd_render(args: argparse.Namespace) -> int:
    from .envoy_bootstrap import render_yaml

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
    from .fake_provider import serve_forever

    serve_forever(
        api=args.api,
        host=args.host,
        port=args.port,
        name=args.name,
        key=args.key,
        key_file=args.key_file,
    )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    return int(bench_main(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sidegate", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", required=True, help="the gateway config (YAML)")

    p = sub.add_parser("run", help="run Envoy and the ext_proc service locally")
    with_config(p)
    p.add_argument("--port", type=int, help="app listener port (overrides listen.port)")
    p.add_argument("--socket", help="ext_proc Unix socket path (default: a private temp dir)")
    p.add_argument("--ready-file", help="write the base URL here once ready")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("extproc", help="serve only the ext_proc service (sidecar container)")
    with_config(p)
    p.add_argument("--socket", default="/run/sidegate/extproc.sock")
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
        "--ready-port", type=int, default=15021, help="Envoy's /ready-only port (0: none)"
    )
    p.add_argument(
        "--drain-seconds", type=float, default=0.0, help="keep serving after SIGTERM while busy"
    )
    p.add_argument(
        "--drain-file", help="when this file appears, drain Envoy's listeners (legacy preStop)"
    )
    p.set_defaults(func=_cmd_extproc)

    p = sub.add_parser("health", help="exit 0 when the ext_proc serves (a startup probe)")
    p.add_argument("--socket", default="/run/sidegate/extproc.sock")
    p.add_argument("--envoy-dir", help="also require Envoy's files here")
    p.add_argument("--wait", type=float, default=0.0, help="keep trying this many seconds")
    p.set_defaults(func=_cmd_health)

    cfg = sub.add_parser("config", help="check or render a gateway config").add_subparsers(
        dest="config_command", required=True
    )
    p = cfg.add_parser("check", help="validate the config and its key sources")
    with_config(p)
    p.add_argument("--strict", action="store_true", help="fail when a key source is unusable")
    p.set_defaults(func=_cmd_check)
    p = cfg.add_parser("render", help="print the generated Envoy bootstrap")
    with_config(p)
    p.add_argument("--port", type=int)
    p.add_argument(
        "--socket", help="ext_proc socket path to render (default /run/sidegate/extproc.sock)"
    )
    p.add_argument(
        "--admin-socket", help="Envoy admin socket to render (default: beside the ext_proc's)"
    )
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser("inject", help="inject the sidecar into manifests, or serve the webhook")
    p.add_argument("-f", "--filename", help="Pod or workload YAML to inject ('-': stdin)")
    p.add_argument("-n", "--namespace", default="default", help="namespace for objects without one")
    p.add_argument("--settings", help="injector settings YAML (the chart's injector ConfigMap)")
    p.set_defaults(func=_cmd_inject, inject_command=None)
    inject_sub = p.add_subparsers(dest="inject_command")
    serve_p = inject_sub.add_parser("serve", help="the HTTPS admission webhook")
    serve_p.add_argument("--host", default="0.0.0.0")
    serve_p.add_argument("--port", type=int, default=8443)
    serve_p.add_argument("--cert", default="/etc/sidegate/webhook-tls/tls.crt")
    serve_p.add_argument("--key", default="/etc/sidegate/webhook-tls/tls.key")
    serve_p.add_argument("--settings", help="injector settings YAML, re-read on change")
    serve_p.add_argument(
        "--max-connections", type=_positive, default=128, help="open connections served at once"
    )
    serve_p.add_argument(
        "--max-inflight", type=_positive, default=4, help="reviews injected at once; more get 429"
    )
    probe_p = inject_sub.add_parser("probe", help="check a running webhook end to end")
    probe_p.add_argument("--url", required=True, help="https://<service>.<ns>.svc:443/inject")
    probe_p.add_argument("--ca-file", required=True, help="the CA the API server trusts")

    p = sub.add_parser("capture", help="transparent capture (the capture init container)")
    cap = p.add_subparsers(dest="capture_command", required=True)
    p = cap.add_parser("install", help="install the iptables REDIRECT rules")
    p.add_argument("--proxy-uid", type=int, default=1337)
    p.add_argument("--to-port", type=int, default=14000)
    p.add_argument("--ports", default="80", help="comma list of TCP ports to capture")
    p.set_defaults(func=_cmd_capture)

    p = sub.add_parser("fake-provider", help="a local provider that speaks the real wire format")
    p.add_argument("--api", choices=["openai", "anthropic"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", default="fake", help="selects x-fake-fault-<name> fault headers")
    p.add_argument("--key", help="require this API key (default: accept any)")
    p.add_argument(
        "--key-file", help="accept the keys in this file (one a line; re-read per request)"
    )
    p.set_defaults(func=_cmd_fake)

    p = sub.add_parser(
        "bench", help="measure sidegate's added latency against Envoy alone and direct"
    )
    p.add_argument("--requests", type=int, default=2000, help="requests per scenario")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    p.add_argument("--json", help="also write the results here")
    p.add_argument(
        "--no-quotas",
        dest="quotas",
        action="store_false",
        help="skip the gateway with quotas counted in memory",
    )
    p.add_argument("--redis-url", help="also measure quotas counted in this Redis")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
