"""cellard: the node agent's entry point (``cellard`` console script, ``python -m agent.daemon``).

Exit codes: 0 after a graceful stop (SIGTERM/SIGINT), 2 for a bad flag or config (one line naming
the key), 1 when the host refuses to let it start (socket in use, directory not creatable).
"""

from __future__ import annotations

import os

# grpcio's fork handlers make fork() in this process slow and noisy; cellard never forks workloads
# (the supervisor does). Must be set before grpc is imported anywhere in the process.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gc  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from typing import TYPE_CHECKING, Any, NoReturn  # noqa: E402

import structlog  # noqa: E402

from agent.auth.grants import CellPolicies, MainSocketGate  # noqa: E402
from agent.auth.identity import CgroupResolver  # noqa: E402
from agent.config import Config, ConfigError, apply_overrides, load, parse_host_port, runtime_config  # noqa: E402
from agent.core.app import App  # noqa: E402
from agent.core.catalog import build_local_services, build_services  # noqa: E402
from agent.core.health import DependencyMonitor, supervisor_probe  # noqa: E402
from agent.core.metrics import start_metrics  # noqa: E402
from agent.core.sdnotify import Notifier  # noqa: E402
from agent.core.server import Server, StartupError  # noqa: E402
from agent.core.supervisor_log import SupervisorLogRelay  # noqa: E402
from agent.forward import check_fronts  # noqa: E402
from agent.local.endpoint import LocalEndpoint, bind_local_tcp, tcp_address  # noqa: E402
from agent.local.jobs.logs import job_logs_service  # noqa: E402
from agent.local.registry import close_backends, release_connection  # noqa: E402
from agent.pb.reporter import start_reporting, stop_reporting  # noqa: E402
from agent.runtime.cells import restore_desired  # noqa: E402
from cells.client import RuntimeClient  # noqa: E402
from cells.errors import CellError  # noqa: E402

if TYPE_CHECKING:
    from observe.daemonlog import DaemonLogBus

log = structlog.get_logger("agent.daemon")

# flag dest -> "section.key" it overrides
FLAG_KEYS = {
    "socket": "server.socket",
    "tcp": "server.tcp_listen",
    "insecure_tcp_dev": "server.insecure_tcp_dev",
    "tls_ca": "tls.ca",
    "tls_cert": "tls.cert",
    "tls_key": "tls.key",
    "state_dir": "paths.state_dir",
    "run_dir": "paths.run_dir",
    "log_dir": "paths.log_dir",
    "cgroup_root": "cells.cgroup_root",
    "log_level": "log.level",
}


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit code 2 (no usage dump in the journal)."""

    def error(self, message: str) -> NoReturn:
        print(f"cellard: flag error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cellard", description="cellar node agent daemon")
    p.add_argument("--config", help="TOML config file (default /etc/cellar/cellard.toml; missing = defaults)")
    p.add_argument("--socket", help="public Unix socket path")
    p.add_argument("--tcp", metavar="HOST:PORT", help="also listen on TCP (mutual TLS required)")
    p.add_argument("--tls-ca", help="CA certificate that signs client certificates")
    p.add_argument("--tls-cert", help="server certificate")
    p.add_argument("--tls-key", help="server private key")
    p.add_argument("--state-dir")
    p.add_argument("--run-dir")
    p.add_argument("--log-dir")
    p.add_argument("--cgroup-root", help="name of cellar's cgroup sub-tree")
    p.add_argument("--log-level", help="debug, info, warning or error")
    p.add_argument(
        "--insecure-tcp-dev",
        action="store_true",
        default=None,
        help="DEVELOPMENT ONLY: allow --tcp without TLS; every TCP caller is trusted",
    )
    return p


def config_from_args(argv: list[str] | None) -> Config:
    """Parse flags, load the file, apply flags on top; raises ConfigError naming the key or flag."""
    args = build_parser().parse_args(argv)
    if args.tcp is not None:
        parse_host_port(args.tcp, "--tcp")
    cfg = load(args.config)
    overrides: dict[str, Any] = {FLAG_KEYS[k]: v for k, v in vars(args).items() if k in FLAG_KEYS}
    cfg = apply_overrides(cfg, overrides)
    if cfg.tcp_enabled and not cfg.tls_enabled and not cfg.server.insecure_tcp_dev:
        raise ConfigError(
            "server.tcp_listen: TCP requires mutual TLS (tls.ca, tls.cert, tls.key); "
            "plain TCP only with --insecure-tcp-dev"
        )
    return cfg


async def attach_runtime(cfg: Config, local_tcp: str) -> RuntimeClient:
    """Connect to the supervisor (starting it if its socket does not answer): it owns every workload."""
    try:
        runtime = await RuntimeClient.connect(runtime_config(cfg, local_tcp))
    except (CellError, OSError, TimeoutError) as exc:
        raise StartupError(f"cannot reach or start the supervisor: {exc}") from exc
    info = await runtime.info()
    log.info("runtime.attached", supervisor_pid=info.get("supervisor_pid"), cgroup_mode=info.get("mode"),
             cgroup_root=info.get("cgroup_root"))
    return runtime


async def wait_for_stop_signal(server: Server) -> None:
    """Return on the first SIGTERM/SIGINT; a second one cancels the drain (``stop_now``)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        log.info("daemon.signal", signal=signal.Signals(signum).name, count=signals)
        if signals == 1:
            stop.set()
        else:
            loop.create_task(server.stop_now())

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await stop.wait()


async def serve(cfg: Config, log_bus: DaemonLogBus) -> int:
    """Start everything, serve until a signal, drain, stop. Workloads are not touched: they outlive us."""
    check_fronts(cfg.front)  # a bad [front] table is a config error, found before the supervisor starts
    # Log streaming decodes millions of small records; the default gen-0 threshold makes the
    # collector take ~20% of that time for nothing (records hold no cycles).
    gc.set_threshold(50_000, 20, 20)
    Server.preflight(cfg)  # a socket in use or unreadable TLS files must not leave a supervisor behind
    local_tcp = bind_local_tcp(cfg)  # before the supervisor: executables' env names the bound port
    runtime = await attach_runtime(cfg, tcp_address(local_tcp))
    supervisor_log = SupervisorLogRelay(runtime)  # its warnings and errors, logged as ours
    await supervisor_log.start()
    cgroup_root = str((await runtime.info()).get("cgroup_root"))
    policies = CellPolicies(runtime, cfg.paths.volumes_dir)
    app = App(config=cfg, bus=log_bus, runtime=runtime, policies=policies)
    await restore_desired(app)  # after a reboot: the applied cells, before anyone can call
    metrics = start_metrics(cfg, runtime)
    local_services = build_local_services(app)
    gate = MainSocketGate(CgroupResolver(cgroup_root), policies)
    gate.closed.append(lambda key: release_connection(app, key))  # file handles die with their connection
    server = Server(app, build_services(app, local_services),
                    outer_interceptors=[metrics.interceptor] if metrics else [],
                    gate=gate)
    await server.start()
    if metrics is not None:
        metrics.serve_health(server.health)  # /healthz follows cellard's own health from now on
    local = LocalEndpoint(app, [*local_services, job_logs_service(app)], cgroup_root, local_tcp,
                          outer_interceptors=[metrics.interceptor.for_listener("local")] if metrics else [])
    await local.start()
    health = DependencyMonitor([supervisor_probe(runtime, skip=cfg.front), *app.health_probes],
                               [server.health, local.health])
    health.start()
    reporting = start_reporting(app)  # pb.WorkerSaver.SaveMachine to [reporter] savers, if any
    notifier = Notifier()  # systemd Type=notify; a no-op when NOTIFY_SOCKET is unset
    notifier.ready(f"serving on {cfg.server.socket}")
    notifier.start_watchdog()

    await wait_for_stop_signal(server)

    notifier.stopping("draining open calls")
    await health.stop()
    await supervisor_log.stop()
    await stop_reporting(reporting)
    await asyncio.gather(server.stop(cfg.server.drain_timeout_s), local.stop(cfg.server.drain_timeout_s))
    close_backends(app)
    if metrics is not None:
        metrics.stop()
    await notifier.close()
    return 0


def main(argv: list[str] | None = None) -> NoReturn:
    try:
        cfg = config_from_args(argv)
    except ConfigError as exc:
        print(f"cellard: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    from observe.daemonlog import configure

    fmt = cfg.log.format
    bus = configure(json=None if fmt == "auto" else fmt == "json", level=cfg.log.level)
    try:
        code = asyncio.run(serve(cfg, bus))
    except ConfigError as exc:  # e.g. unreadable TLS files, found when the listener is built
        print(f"cellard: config error: {exc}", file=sys.stderr)
        code = 2
    except StartupError as exc:
        print(f"cellard: cannot start: {exc}", file=sys.stderr)
        code = 1
    raise SystemExit(code)


if __name__ == "__main__":
    main()
