"""``cellar-saver``: the worker saver as a process of its own (no cells, no supervisor).

TCP with mutual TLS (``--tls-ca/--tls-cert/--tls-key``): any client certificate signed by that CA
may report and read, since the CA is the fleet's. Plain TCP only with ``--insecure`` (development,
tests). Logs JSON events; ``saver.listening`` carries the bound address (``--listen 127.0.0.1:0``
picks a free port). Exit codes: 0 after SIGTERM/SIGINT, 2 for bad flags, 1 when it cannot start.
"""

from __future__ import annotations

import os

os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"

import argparse  # noqa: E402
import asyncio  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from typing import NoReturn  # noqa: E402

DEFAULT_DATABASE = "/var/lib/cellar/saver.sqlite"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cellar-saver", description="cellar worker saver (pb.WorkerSaver)")
    p.add_argument("--listen", default="127.0.0.1:7444", help="HOST:PORT (port 0 = any free one)")
    p.add_argument("--database", default=DEFAULT_DATABASE,
                   help="SQLite file path, or a postgresql:// DSN (default %(default)s)")
    p.add_argument("--history", type=int, default=100, help="reports kept per machine")
    p.add_argument("--max-machines", type=int, default=100_000)
    p.add_argument("--tls-ca")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--insecure", action="store_true", help="DEVELOPMENT ONLY: plain TCP, no authentication")
    p.add_argument("--log-level", default="info")
    p.add_argument("--metrics-listen", default="", metavar="HOST:PORT",
                   help="serve GET /metrics (Prometheus) and /healthz there, plain HTTP (default: off)")
    p.add_argument("--dashboard-listen", default="", metavar="HOST:PORT",
                   help="serve the read-only fleet dashboard there (default: off); HTTPS with the --tls-* "
                        "certificate, where a client certificate signed by --tls-ca is let in")
    p.add_argument("--dashboard-token-sha256", default="", metavar="HEX",
                   help="SHA-256 of the dashboard's bearer token (printf %%s \"$TOKEN\" | sha256sum)")
    p.add_argument("--dashboard-stale-after", type=float, default=180.0, metavar="SECONDS",
                   help="a machine is stale when its last report is older (default %(default)s)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="processes serving --listen together (SO_REUSEPORT; needs a fixed port); default 1")
    p.add_argument("--dashboard-refresh", type=int, default=5, metavar="SECONDS",
                   help="how often open pages refresh themselves (0 = never; default %(default)s)")
    return p


async def serve(args: argparse.Namespace) -> int:
    import grpc
    import structlog
    from grpc_health.v1 import health_pb2_grpc

    from agent.auth import tls
    from agent.config import TLSConfig
    from agent.core import reflection
    from agent.core.health import SERVICE_NAME as HEALTH_SERVICE
    from agent.core.health import DependencyMonitor, HealthServicer, saver_probe
    from agent.pb.saver.servicers import MachinesServicer, WorkerSaverServicer
    from agent.pb.saver.store import StoreError, open_store
    from agent.version import VERSION
    from proto.cellar.v1 import inventory_pb2_grpc
    from proto.pb import workerServer_pb2_grpc

    log = structlog.get_logger("agent.pb.saver")
    try:
        store = await asyncio.to_thread(open_store, args.database, history=args.history,
                                        max_machines=args.max_machines)
    except StoreError as exc:
        print(f"cellar-saver: cannot open the database: {exc}", file=sys.stderr)
        return 1
    names = ["pb.WorkerSaver", "cellar.v1.Machines", HEALTH_SERVICE, *reflection.SERVICE_NAMES]
    metrics = None
    if args.metrics_listen:
        from agent.core.metrics import MetricsEndpoint

        try:
            metrics = MetricsEndpoint.start_plain(args.metrics_listen, "--metrics-listen")
        except OSError as exc:
            print(f"cellar-saver: cannot listen on {args.metrics_listen}: {exc.strerror or exc}", file=sys.stderr)
            store.close()
            return 1
    dashboard = None
    if args.dashboard_listen:
        from agent.config import parse_host_port
        from agent.pb.saver.dashboard import auth
        from agent.pb.saver.dashboard.server import Dashboard, Settings, tls_context

        token = auth.parse_token_hash(args.dashboard_token_sha256) if args.dashboard_token_sha256 else None
        try:
            host, dport = parse_host_port(args.dashboard_listen, "--dashboard-listen")
            ctx = None if args.insecure else tls_context(args.tls_ca, args.tls_cert, args.tls_key)
            dashboard = Dashboard(host, dport, store, Settings(token, ctx, stale_after_s=args.dashboard_stale_after,
                                                               refresh_s=max(0, args.dashboard_refresh),
                                                               history=args.history))
        except OSError as exc:
            print(f"cellar-saver: cannot listen on {args.dashboard_listen}: {exc.strerror or exc}", file=sys.stderr)
            store.close()
            if metrics is not None:
                metrics.stop()
            return 1
        log.info("saver.dashboard_listening", address=dashboard.address, tls=ctx is not None,
                 token=token is not None)
    from agent.pb.saver import workers as saver_workers

    shared = args.workers > 1 or saver_workers.is_worker()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1 if shared else 0)],
                             interceptors=[metrics.interceptor] if metrics is not None else [])
    workerServer_pb2_grpc.add_WorkerSaverServicer_to_server(WorkerSaverServicer(store), server)
    inventory_pb2_grpc.add_MachinesServicer_to_server(MachinesServicer(store), server)
    health = HealthServicer(names[:2], VERSION)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable(names, server)
    try:
        if args.insecure:
            port = server.add_insecure_port(args.listen)
        else:
            creds = tls.server_credentials(TLSConfig(args.tls_ca, args.tls_cert, args.tls_key))
            port = server.add_secure_port(args.listen, creds)
    except RuntimeError as exc:
        print(f"cellar-saver: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        store.close()
        if metrics is not None:
            metrics.stop()
        if dashboard is not None:
            dashboard.stop()
        return 1
    await server.start()
    if metrics is not None:
        metrics.serve_health(health)
    monitor = DependencyMonitor([saver_probe(store)], [health])
    monitor.start()
    host = args.listen.rpartition(":")[0]
    log.info("saver.listening", address=f"{host}:{port}", database=store.kind, tls=not args.insecure,
             worker=saver_workers.is_worker())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = [] if saver_workers.is_worker() else saver_workers.start(args)

    async def watch_workers() -> None:  # one ended early: stop serving, so the unit restarts whole
        while not stop.is_set():
            if any(w.poll() is not None for w in started):
                log.error("saver.worker_exited", codes=[w.returncode for w in started])
                stop.set()
            await asyncio.sleep(1)

    watcher = asyncio.create_task(watch_workers()) if started else None
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    await asyncio.to_thread(saver_workers.stop, started)
    await monitor.stop()
    await health.shutdown()
    await server.stop(5)
    if metrics is not None:
        metrics.stop()
    if dashboard is not None:
        dashboard.stop()
    store.close()
    log.info("saver.stopped")
    return 0


def main(argv: list[str] | None = None) -> NoReturn:
    args = build_parser().parse_args(argv)
    if not args.insecure and not (args.tls_ca and args.tls_cert and args.tls_key):
        print("cellar-saver: flag error: TCP needs --tls-ca, --tls-cert and --tls-key (or --insecure for "
              "development)", file=sys.stderr)
        raise SystemExit(2)
    if args.dashboard_listen and args.insecure and not args.dashboard_token_sha256:
        print("cellar-saver: flag error: --dashboard-listen needs --dashboard-token-sha256 (or TLS client "
              "certificates, without --insecure)", file=sys.stderr)
        raise SystemExit(2)
    if not 1 <= args.workers <= 256 or (args.workers > 1 and args.listen.endswith(":0")):
        print("cellar-saver: flag error: --workers: 1-256, and more than one needs a fixed --listen port",
              file=sys.stderr)
        raise SystemExit(2)
    if args.dashboard_token_sha256:
        from agent.pb.saver.dashboard.auth import BadTokenHash, parse_token_hash

        try:
            parse_token_hash(args.dashboard_token_sha256)
        except BadTokenHash as exc:
            print(f"cellar-saver: flag error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    from agent.config import ConfigError
    from observe.daemonlog import configure

    configure(json=True, level=args.log_level)
    try:
        code = asyncio.run(serve(args))
    except ConfigError as exc:
        print(f"cellar-saver: config error: {exc}", file=sys.stderr)
        code = 2
    raise SystemExit(code)


if __name__ == "__main__":
    main()
