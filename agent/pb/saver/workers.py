"""``cellar-saver --workers N``: N processes serving one port (SO_REUSEPORT), as N savers behind the
kernel's load balancer. Savers are stateless over their database, so this is the same scaling as
several hosts behind a load balancer, for the cores of one host: a saver is CPU-bound in Python
(validating a 500-port report costs milliseconds) long before PostgreSQL is.

The first process serves the dashboard and metrics too; the others only pb.WorkerSaver and
cellar.v1.Machines. The first one starts the others, forwards SIGTERM/SIGINT to them and waits
for them; when one ends early, it stops them all (and the service manager restarts the unit).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

WORKER_ENV = "CELLAR_SAVER_WORKER"  # set in the started workers: they start no workers of their own


def is_worker() -> bool:
    return os.environ.get(WORKER_ENV) == "1"


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The flags of a worker: the same listener and database, no dashboard and no metrics."""
    argv = [sys.executable, "-m", "agent.pb.saver.main", "--listen", args.listen, "--database", args.database,
            "--history", str(args.history), "--max-machines", str(args.max_machines), "--log-level", args.log_level]
    if args.insecure:
        argv.append("--insecure")
    else:
        argv += ["--tls-ca", args.tls_ca, "--tls-cert", args.tls_cert, "--tls-key", args.tls_key]
    return argv


def start(args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    """Start ``args.workers - 1`` workers (this process is the first)."""
    env = dict(os.environ, **{WORKER_ENV: "1"})
    return [subprocess.Popen(worker_argv(args), env=env, stdin=subprocess.DEVNULL)
            for _ in range(args.workers - 1)]


def stop(workers: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in workers:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
