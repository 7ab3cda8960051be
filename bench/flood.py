"""A connection flood against a throwaway cellard: the operator keeps answering, memory comes back.

    .venv/bin/python bench/flood.py [--tcp 20000] [--local 5000] [--seconds 15] [--rounds 2]

Loopback only, bounded in count and time. A throwaway cellard (bench/_cellard.py) serves its main
socket, mTLS TCP on 127.0.0.1 and its node-local socket. Each round:

- a root flooder process keeps ``--tcp`` idle TCP connections open to the mTLS port (it never sends
  a byte; one the server closes is opened again) for ``--seconds``;
- a flooder process running as uid 65534 (nobody) does the same with ``--local`` connections to
  ``local.sock``;
- meanwhile this process measures, alternately, root's ``cellar health`` on the main socket (the real
  CLI command, in process: a fresh connection per call, the reflection list, then one Check per
  service) and an admin's Check over a *fresh* mTLS connection, plus an admin Check on a channel
  opened before the flood. Each is measured before the flood too (the baseline, same run).

``--nice 10`` runs the flooders at a lower CPU priority: on this 2-vCPU host five busy flooder
processes also starve the probing client itself, which is the host's scheduler, not cellard.

Prints p50/max latency of each probe during the flood beside its baseline, how many probes failed,
what the flooders achieved, the host's load average, and cellard's RSS and fd count: baseline, at
the flood's peak, and settled after each round. "closed by cellard" counts only FINs: a TCP
connection cellard displaced is dropped without one (agent.auth.tlsfront), so its flooder holds a
dead end it never learns about and does not reconnect. cellard keeps the default RLIMIT_NOFILE of this host; this process raises
its own only after starting it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from bench._cellard import Cellard, interrupt_on_sigterm  # noqa: E402

#: The flooder: keep COUNT connections open to a Unix path or host:port for SECONDS, reopening any
#: the server closed. Standard library only (it runs as nobody, who cannot read root's venv).
FLOODER = r"""
import json, os, resource, selectors, socket, sys, time
target, count, seconds, nice = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
os.nice(nice)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
if target.startswith("/"):
    family, addr = socket.AF_UNIX, target
else:
    host, port = target.rsplit(":", 1)
    family, addr = socket.AF_INET, (host, int(port))
sel = selectors.DefaultSelector()
opened = closed_by_server = failed = peak = 0
def open_one():
    global opened, failed
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(addr)
    except (BlockingIOError, InterruptedError):
        if family == socket.AF_UNIX:  # EAGAIN: the listener's backlog is full (cellard paces accepts)
            failed += 1
            s.close()
            return
    except OSError:
        failed += 1
        s.close()
        return
    opened += 1
    sel.register(s, selectors.EVENT_READ)
deadline = time.monotonic() + seconds
print("started", flush=True)
while time.monotonic() < deadline:
    live = len(sel.get_map())
    peak = max(peak, live)
    for _ in range(min(count - live, 2000)):
        open_one()
    for key, _ in sel.select(timeout=0.05):
        s = key.fileobj
        try:
            data = s.recv(65536)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            data = b""
        if not data:
            closed_by_server += 1
            sel.unregister(s)
            s.close()
    if failed and len(sel.get_map()) == 0:
        time.sleep(0.01)
live = len(sel.get_map())
for key in list(sel.get_map().values()):
    key.fileobj.close()
print(json.dumps({"uid": os.getuid(), "opened": opened, "closed_by_server": closed_by_server,
                  "connect_failed": failed, "peak_open": peak, "open_at_end": live}), flush=True)
"""
PER_FLOODER = 5000
PLAIN_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    """The host's load average: other work on a shared host moves every figure here."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid: int) -> dict[str, int]:
    """Open fds by kind (socket, pipe, anon_inode:[pidfd], file) for the report."""
    kinds: dict[str, int] = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        kind = target.split(":", 1)[0] if ":" in target and not target.startswith("/") else "file"
        if target.startswith("anon_inode:"):
            kind = target
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def make_pki(directory: str) -> dict[str, str]:
    from agent.auth import pki

    pki.init_ca(directory)
    pki.issue(directory, "server", "cellard-flood", sans=("127.0.0.1", "localhost"))
    pki.issue(directory, "client", "flood-admin", role="admin")
    return {"ca": f"{directory}/ca.pem", "cert": f"{directory}/cellard-flood.pem",
            "key": f"{directory}/cellard-flood-key.pem", "admin_cert": f"{directory}/flood-admin.pem",
            "admin_key": f"{directory}/flood-admin-key.pem"}


class Probes:
    """Root's ``cellar health`` on the main socket and admin Checks over mTLS, timed."""

    def __init__(self, socket_path: str, tcp: str, pki: dict[str, str]) -> None:
        self.socket_path = socket_path
        self.tcp = tcp
        ca, cert, key = (Path(pki[k]).read_bytes() for k in ("ca", "admin_cert", "admin_key"))
        self.creds = grpc.ssl_channel_credentials(ca, key, cert)
        self.kept = grpc.secure_channel(tcp, self.creds)
        self.check(self.kept)

    @staticmethod
    def check(channel: grpc.Channel) -> None:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    def cli_health(self) -> None:
        from click.testing import CliRunner

        from agent.cli import cli

        result = CliRunner().invoke(cli, ["--addr", self.socket_path, "--timeout", "5", "-o", "json", "health"])
        gc.collect()  # the command's channels close now, as at the end of a CLI process
        if result.exit_code != 0:
            raise RuntimeError(f"cellar health exited {result.exit_code}: {result.output[-200:]}")

    def root_check(self) -> None:
        with grpc.insecure_channel("unix:" + self.socket_path) as channel:
            self.check(channel)

    def admin_fresh(self) -> None:
        with grpc.secure_channel(self.tcp, self.creds) as channel:
            self.check(channel)

    def admin_kept(self) -> None:
        self.check(self.kept)

    def run(self, seconds: float | None = None, rounds: int | None = None) -> dict[str, Any]:
        probes = {"root cellar health (main socket)": self.cli_health,
                  "root Check, new main-socket connection": self.root_check,
                  "admin Check, new mTLS connection": self.admin_fresh,
                  "admin Check, kept mTLS connection": self.admin_kept}
        times: dict[str, list[float]] = {name: [] for name in probes}
        errors: dict[str, list[str]] = {name: [] for name in probes}
        deadline = time.monotonic() + seconds if seconds is not None else None
        done = 0
        while (deadline is None or time.monotonic() < deadline) and (rounds is None or done < rounds):
            for name, probe in probes.items():
                started = time.perf_counter()
                try:
                    probe()
                    times[name].append(time.perf_counter() - started)
                except grpc.RpcError as exc:  # a failed probe is a figure, not a crash
                    errors[name].append(f"{exc.code().name}: {(exc.details() or '')[:80]}")  # type: ignore[attr-defined]
                except Exception as exc:
                    errors[name].append(type(exc).__name__ + ": " + str(exc).splitlines()[0][:120])
            done += 1
            time.sleep(0.1)
        return {"times": times, "errors": errors}


def summary(label: str, baseline: list[float], during: list[float], errors: list[str]) -> str:
    def fig(values: list[float]) -> str:
        if not values:
            return "no answer"
        return f"p50 {statistics.median(values) * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms"

    ratio = statistics.median(during) / statistics.median(baseline) if during and baseline else float("nan")
    failed = f", {len(errors)} failed ({errors[0]})" if errors else ""
    within = "yes" if during and max(during) < 1.0 and not errors else "NO"
    return (f"  {label:40s} baseline {fig(baseline)} | flood {fig(during)} (n={len(during)}, "
            f"p50 x{ratio:.1f}{failed}); all within 1 s: {within}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tcp", type=int, default=20000, help="idle TCP connections (max 30000)")
    parser.add_argument("--local", type=int, default=5000, help="local.sock connections as nobody (max 10000)")
    parser.add_argument("--seconds", type=float, default=15.0, help="flood duration per round (max 60)")
    parser.add_argument("--rounds", type=int, default=2, help="flood rounds (max 5)")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds after a round before measuring")
    parser.add_argument("--nice", type=int, default=0,
                        help="run the flooders at this niceness: on a 2-core host five busy flooder processes "
                        "also starve the probing client of CPU; nice 10 shows what is left to cellard")
    args = parser.parse_args()
    args.tcp, args.local = min(args.tcp, 30000), min(args.local, 10000)
    args.seconds, args.rounds = min(args.seconds, 60.0), min(args.rounds, 5)
    interrupt_on_sigterm()

    daemon = Cellard()
    pki_dir = tempfile.mkdtemp(prefix="cellar-flood-pki-")
    try:
        pki = make_pki(pki_dir)
        os.chmod(daemon.base, 0o755)  # nobody must reach <base>/run/local.sock
        daemon.start({"server": {"tcp_listen": "127.0.0.1:0"},
                      "tls": {"ca": pki["ca"], "cert": pki["cert"], "key": pki["key"]},
                      "auth": {"identities": {"flood-admin": "admin"}}})
        tcp = daemon.event("server.listening", "tcp")["tcp"]
        local = str(Path(daemon.config["paths"]["run_dir"]) / "local.sock")
        cellard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Our own limit only now: cellard keeps the host's (it raises its soft limit to the hard one).
        # The hard limit may not be raisable (no CAP_SYS_RESOURCE in a container: 20,000 here), so
        # the TCP flood is spread over processes of at most PER_FLOODER connections each.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, 65536), max(hard, 65536)))
        probes = Probes(daemon.socket, tcp, pki)
        probes.run(rounds=3)  # warm-up: imports, first connections
        time.sleep(1.0)
        base_rss, base_fds = rss_mb(daemon.pid), fds(daemon.pid)
        baseline = probes.run(rounds=10)
        print(f"cellard pid {daemon.pid}, RLIMIT_NOFILE {cellard_limit}; flood: {args.tcp} idle TCP + "
              f"{args.local} local.sock (uid 65534), {args.seconds:g} s x {args.rounds} rounds, flooders at nice {args.nice}")
        print(f"baseline: RSS {base_rss:.1f} MB, fds {base_fds}; host load average {load_average()}")
        for round_no in range(1, args.rounds + 1):
            shares = [min(PER_FLOODER, args.tcp - i) for i in range(0, args.tcp, PER_FLOODER)]
            flooders = [
                subprocess.Popen([PLAIN_PYTHON, "-c", FLOODER, local, str(args.local), str(args.seconds), str(args.nice)],
                                 stdout=subprocess.PIPE, text=True, user=65534, group=65534),
                *(subprocess.Popen([PLAIN_PYTHON, "-c", FLOODER, tcp, str(n), str(args.seconds), str(args.nice)],
                                   stdout=subprocess.PIPE, text=True) for n in shares),
            ]
            for proc in flooders:
                assert proc.stdout is not None
                assert proc.stdout.readline().strip() == "started"
            peak: dict[str, float] = {"rss": 0.0, "fds": 0}
            stop = threading.Event()

            def sample(peak: dict[str, float] = peak, stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    try:
                        peak["rss"] = max(peak["rss"], rss_mb(daemon.pid))
                        peak["fds"] = max(peak["fds"], fds(daemon.pid))
                    except OSError:
                        pass
                    stop.wait(0.2)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            time.sleep(min(2.0, args.seconds / 4))  # let the flood build up
            cpu_before, wall_before = cpu_s(daemon.pid), time.monotonic()
            during = probes.run(seconds=args.seconds - min(2.0, args.seconds / 4) - 0.5)
            cellard_cpu = (cpu_s(daemon.pid) - cpu_before) / (time.monotonic() - wall_before)
            results = []
            for proc in flooders:
                out, _ = proc.communicate(timeout=args.seconds + 30)
                results.append(json.loads(out.strip().splitlines()[-1]))
            stop.set()
            sampler.join()
            print(f"round {round_no}: cellard used {cellard_cpu * 100:.0f} % of a core during the probes; "
                  f"host load average {load_average()} (1, 5, 15 min)")
            for name in baseline["times"]:
                print(summary(name, baseline["times"][name], during["times"][name], during["errors"][name]))
            tcp_total = {k: sum(r[k] for r in results[1:]) for k in results[0] if k != "uid"}
            for label, res in (("local.sock flooder (nobody)", results[0]),
                               (f"TCP flooders (root, {len(shares)})", tcp_total)):
                print(f"  {label:28s} opened {res['opened']}, closed by cellard {res['closed_by_server']}, "
                      f"connect failed {res['connect_failed']}, most open at once {res['peak_open']}")
            time.sleep(args.settle)
            print(f"  cellard: RSS {base_rss:.1f} MB -> peak {peak['rss']:.1f} -> settled {rss_mb(daemon.pid):.1f} MB "
                  f"(+{rss_mb(daemon.pid) - base_rss:.1f}); fds {base_fds} -> peak {peak['fds']} -> settled "
                  f"{fds(daemon.pid)} {fd_kinds(daemon.pid)}")
        probes.kept.close()
    finally:
        daemon.close()
        import shutil

        shutil.rmtree(pki_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
