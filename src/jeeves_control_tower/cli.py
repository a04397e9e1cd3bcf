"""``jeeves-ipc``: the command-line entry point.

- ``jeeves-ipc demo`` starts the demo system with its observability endpoint and runs until
  Ctrl-C / SIGTERM (exit status 0) or for ``--duration`` seconds.
- ``jeeves-ipc dashboard`` serves the Streamlit dashboard (the ``dashboard`` extra).
- ``jeeves-ipc grafana export DIR`` writes the Grafana dashboard, provisioning and alert rules.
- ``jeeves-ipc serve-http TARGET`` serves the bus's HTTP face (the ``http`` extra).
- ``jeeves-ipc asyncapi`` prints the AsyncAPI 3.0 document of the registered messages.
- ``jeeves-ipc hub --port N`` serves a bus and its coordinator over gRPC (the ``grpc`` extra).

Each subcommand sets ``run`` (``Namespace -> exit status``) on the parsed arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path
from typing import TypeAlias

from . import __version__
from ._assets import AssetNotFound, asset_dir, grafana_files
from .contracts.cli import add_asyncapi_command
from .ipc.adapters.http.cli import add_serve_http_command

__all__ = ["build_parser", "main", "use_otlp_endpoint"]

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be within 0..65535, got {text}")
    return value


def _http_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"must be an http:// or https:// URL, got {text!r}")
    return text.rstrip("/")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jeeves-ipc", description="Jeeves Control Tower: observable IPC for asyncio."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(commands)
    _add_dashboard(commands)
    _add_grafana(commands)
    add_serve_http_command(commands)
    add_asyncapi_command(commands)
    _add_hub(commands)
    return parser


def _add_demo(commands: Commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the instrumented demo system and its observability endpoint",
        description="Run a demo system (flow/worker/vertical services, retries, timeouts,"
        " fan-out events, queries, a flapping service) and serve /metrics, /api/services,"
        " /api/flow, /api/stats, /api/history, /api/peers and /healthz until stopped.",
    )
    demo.add_argument(
        "--rate", type=_positive, default=20.0, help="operations per second (default 20)"
    )
    demo.add_argument("--duration", type=_positive, help="stop after S seconds (default: never)")
    demo.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    demo.add_argument("--port", type=_port, default=9464, help="port (default 9464; 0 = any)")
    demo.add_argument("--seed", type=int, help="random seed for a reproducible run")
    demo.add_argument(
        "--flap-period", type=_positive, default=30.0, help="billing is unhealthy once per S"
    )
    demo.add_argument(
        "--token",
        default=os.environ.get("JEEVES_TOKEN") or None,
        help="require this bearer token (default: $JEEVES_TOKEN, else none)",
    )
    demo.add_argument(
        "--otlp-endpoint",
        help="export spans over OTLP to this base URL, as $OTEL_EXPORTER_OTLP_ENDPOINT would"
        " (the flag wins over every OTEL_* endpoint; default: the OTEL_* environment)",
    )
    demo.add_argument(
        "--transport",
        metavar="URL",
        help="run the demo's bus over this broker: redis://, nats://, amqp(s)://, or"
        " grpc://HOST:PORT for a running hub (default: in-process)",
    )
    demo.add_argument(
        "--prefix", help="the transport's name prefix, as is (default: the transport's own)"
    )
    demo.add_argument("-v", "--verbose", action="store_true", help="log every bus event")
    demo.set_defaults(run=_run_demo)


def _add_dashboard(commands: Commands) -> None:
    dashboard = commands.add_parser(
        "dashboard",
        help="serve the live dashboard (Streamlit)",
        description="Serve the Streamlit dashboard of one or more observability endpoints."
        " With no --endpoint and no $JEEVES_ENDPOINTS it starts an in-process demo and shows"
        " that. Needs the dashboard extra: pip install 'jeeves-control-tower[dashboard]'."
        " A bearer token for the endpoints is read from $JEEVES_TOKEN.",
    )
    dashboard.add_argument(
        "--endpoint",
        action="append",
        type=_http_url,
        metavar="URL",
        help="an observability endpoint, e.g. http://127.0.0.1:9464 (repeat for several;"
        " default: $JEEVES_ENDPOINTS, else an in-process demo)",
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    dashboard.add_argument("--port", type=_port, default=8501, help="port (default 8501)")
    dashboard.set_defaults(run=_run_dashboard)


def _add_grafana(commands: Commands) -> None:
    grafana = commands.add_parser(
        "grafana", help="the Grafana dashboard, provisioning and Prometheus alert rules"
    )
    actions = grafana.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export",
        help="write the Grafana and Prometheus files to DIR",
        description="Write every file of the shipped grafana/ tree (dashboard JSON,"
        " provisioning, alert rules) to DIR, keeping its layout. Existing files are kept"
        " unless --force.",
    )
    export.add_argument("directory", type=Path, metavar="DIR")
    export.add_argument("--force", action="store_true", help="overwrite files that exist")
    export.set_defaults(run=_run_grafana_export)


def _add_hub(commands: Commands) -> None:
    hub = commands.add_parser(
        "hub",
        help="serve a bus and its coordinator over gRPC (commbus.proto)",
        description="Serve a control-tower hub: any process that speaks commbus.proto (Python's"
        " GrpcTransport, or another language) joins the bus through it. Runs until Ctrl-C /"
        " SIGTERM. Needs the grpc extra: pip install 'jeeves-control-tower[grpc]'.",
    )
    hub.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    hub.add_argument("--port", type=_port, default=50051, help="port (default 50051; 0 = any)")
    hub.add_argument(
        "--token",
        default=os.environ.get("JEEVES_HUB_TOKEN") or None,
        help="require this bearer token (default: $JEEVES_HUB_TOKEN, else none)",
    )
    hub.add_argument(
        "--endpoint-port",
        type=_port,
        help="also serve the observability endpoint (/metrics, /api/services, /api/peers:"
        " the connected processes) on this port (the observability extra)",
    )
    hub.add_argument("--tls-cert", type=Path, help="serve TLS with this PEM certificate")
    hub.add_argument("--tls-key", type=Path, help="... and this PEM private key")
    hub.set_defaults(run=_run_hub)


async def _hub(args: argparse.Namespace) -> None:
    from .ipc import CommBusCoordinator, InMemoryCommBus
    from .ipc.adapters.grpc import serve_grpc

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    tls = None
    if args.tls_cert is not None:
        tls = (args.tls_key.read_bytes(), args.tls_cert.read_bytes())
    coordinator = CommBusCoordinator(None, InMemoryCommBus())
    hub = await serve_grpc(coordinator, host=args.host, port=args.port, token=args.token, tls=tls)
    print(f"Jeeves hub listening on {hub.address}", flush=True)
    endpoint = None
    if args.endpoint_port is not None:
        from .observability import serve

        endpoint = serve(coordinator, host=args.host, port=args.endpoint_port, token=args.token)
        endpoint.peers = hub.peers
        print(f"  endpoint {endpoint.url}  (/metrics, /api/peers)", flush=True)
    try:
        await stop.wait()
    finally:
        if endpoint is not None:
            endpoint.close()
        await hub.close()


def _run_hub(args: argparse.Namespace) -> int:
    if (args.tls_cert is None) != (args.tls_key is None):
        print("jeeves-ipc: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    try:
        import grpc  # noqa: F401
    except ImportError:
        print(
            "jeeves-ipc: the hub needs the grpc extra: pip install 'jeeves-control-tower[grpc]'",
            file=sys.stderr,
        )
        return 1
    try:
        asyncio.run(_hub(args))
    except (OSError, RuntimeError) as exc:
        print(f"jeeves-ipc: cannot start the hub: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


async def _demo(args: argparse.Namespace) -> None:
    from .demo import DemoConfig, run_demo
    from .logging import StdlibLoggerAdapter

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # not available on every platform, nor outside the main thread
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    logger = StdlibLoggerAdapter(logging.getLogger("jeeves.demo")) if args.verbose else None
    config = DemoConfig(
        rate=args.rate,
        seed=args.seed,
        flap_period=args.flap_period,
        flap_down=min(6.0, args.flap_period / 3),
    )
    started = time.monotonic()

    def ready(server: object, system: object) -> None:
        url = getattr(server, "url", "")
        print(f"Jeeves demo running at {url}", flush=True)
        print(f"  metrics  {url}/metrics", flush=True)
        print(f"  api      {url}/api/services  {url}/api/flow  {url}/api/stats", flush=True)
        link = getattr(system, "link", None)
        if link is not None:  # the URL as the transport shows it: credentials redacted
            print(f"  over     {link.transport.system} {link.transport.url}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)

    system = await run_demo(
        config,
        host=args.host,
        port=args.port,
        token=args.token,
        duration=args.duration,
        stop=stop,
        on_ready=ready,
        logger=logger,
        transport=args.transport,
        prefix=args.prefix,
    )
    total = sum(system.workload.started.values())
    elapsed = time.monotonic() - started
    print(f"Stopped after {elapsed:.1f}s: {total} operations started.", flush=True)


def use_otlp_endpoint(url: str | None, environ: MutableMapping[str, str] = os.environ) -> None:
    """``--otlp-endpoint URL``: the process's ``OTEL_EXPORTER_OTLP_ENDPOINT`` (as
    ``opentelemetry-instrument --exporter_otlp_endpoint`` sets it), read by the exporter
    itself. An explicit flag wins over the environment: the traces-specific endpoint is
    dropped, and ``otlp`` joins ``OTEL_TRACES_EXPORTER`` (replacing ``none``)."""
    if not url:
        return
    environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = url
    environ.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    names = [n for n in names if n.lower() != "none"]
    if "otlp" not in names:
        names.append("otlp")
    environ["OTEL_TRACES_EXPORTER"] = ",".join(names)


def _run_demo(args: argparse.Namespace) -> int:
    from .demo.broker import SCHEMES
    from .ipc import TransportError

    if args.transport is not None and args.transport.split("://", 1)[0].lower() not in SCHEMES:
        print(f"jeeves-ipc: --transport takes {', '.join(SCHEMES)} URLs", file=sys.stderr)
        return 2
    use_otlp_endpoint(args.otlp_endpoint)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        asyncio.run(_demo(args))
    except (OSError, TransportError) as exc:  # a TransportError names no credentials
        print(f"jeeves-ipc: cannot start the demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 0
    return 0


def _run_dashboard(args: argparse.Namespace) -> int:
    """``streamlit run`` the dashboard's app.py; on POSIX it replaces this process, so signals
    (Ctrl-C, a supervisor's SIGTERM) reach the server and its exit status is ours."""
    try:
        import streamlit  # noqa: F401
    except ImportError:
        print(
            "jeeves-ipc: the dashboard needs the dashboard extra:"
            " pip install 'jeeves-control-tower[dashboard]'",
            file=sys.stderr,
        )
        return 1
    try:
        app = asset_dir("dashboard") / "app.py"
    except AssetNotFound as exc:
        print(f"jeeves-ipc: {exc}", file=sys.stderr)
        return 1
    env = dict(os.environ)
    if args.endpoint:
        env["JEEVES_ENDPOINTS"] = ",".join(args.endpoint)
    argv = [
        sys.executable, "-m", "streamlit", "run", str(app),
        f"--server.address={args.host}", f"--server.port={args.port}",
        "--server.headless=true", "--browser.gatherUsageStats=false",
    ]  # fmt: skip
    sys.stdout.flush()
    if os.name == "posix":
        os.execve(sys.executable, argv, env)
    return subprocess.call(argv, env=env)  # pragma: no cover - not POSIX


def _run_grafana_export(args: argparse.Namespace) -> int:
    try:
        root = asset_dir("grafana")
    except AssetNotFound as exc:
        print(f"jeeves-ipc: {exc}", file=sys.stderr)
        return 1
    files = list(grafana_files(root))
    target: Path = args.directory
    existing = [f for f in files if (target / f).exists()]
    if existing and not args.force:
        names = ", ".join(str(f) for f in existing)
        print(f"jeeves-ipc: {target} already has {names} (--force overwrites)", file=sys.stderr)
        return 1
    for relative in files:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / relative, target / relative)
        print(target / relative)
    print(f"Wrote {len(files)} files to {target}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except ModuleNotFoundError as exc:  # an extra this command needs is not installed
        from .ipc.adapters.extras import extra_for

        extra = extra_for(exc.name)
        if extra is None:
            raise
        print(
            f"jeeves-ipc: this needs the {extra} extra:"
            f" pip install 'jeeves-control-tower[{extra}]' (no module {exc.name!r})",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
