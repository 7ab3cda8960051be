"""A client subprocess for the node-local endpoint attack tests (issue 13): it runs a snippet of
Python against the endpoint, from inside a cell (its pid moved into a running executable's leaf
cgroup *before* it connects) or on the host as any uid, and prints the snippet's JSON result.

The snippet sees ``ch`` (a channel to the endpoint, connected at its first call), ``arg`` (the JSON
argument), ``code(fn)`` (the status name of a failing call, "OK" otherwise) and sets ``out``. Its
top-level imports run as root before the client drops to ``uid``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

from tests.support import REPO
from tests.support.timeouts import scaled

NOBODY = 65534

_PRELUDE = r"""
import json, os, sys, grpc, grpc._channel
target, uid, arg = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
{imports}
ch = grpc.insecure_channel(target if ":" in target else "unix:" + target)  # connects at its first call
print("ready", flush=True)
sys.stdin.readline()  # the test moves us into a cell meanwhile
if uid:  # after importing as root (the interpreter may live below a 0700 home), before connecting
    os.setgroups([]); os.setgid(uid); os.setuid(uid)
def code(fn):
    try:
        fn()
        return "OK"
    except grpc.RpcError as e:
        return e.code().name
out = None
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLAR_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def run_client(argv: list[str], leaf: str | None, ready: bool = True, cwd: str = "/") -> str:
    """Start a client process; once it printed "ready" (when ``ready``), move it into cgroup ``leaf``
    (a running executable's leaf: a workload of that cell; None: it stays where it is), let it go on
    (a line on its stdin) and return its stdout. It must exit 0."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=cwd)
    try:
        assert proc.stdout is not None
        if ready:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        if leaf is not None:
            with open(os.path.join(leaf, "cgroup.procs"), "w") as fh:
                fh.write(str(proc.pid))
            with open(f"/proc/{proc.pid}/cgroup") as fh:
                unified = next(line[3:].strip() for line in fh if line.startswith("0::"))
            assert leaf.endswith(unified), (leaf, unified)
        out, err = proc.communicate("go\n", timeout=scaled(60))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return out


def run(target: str, snippet: str, arg: Any = None, *, leaf: str | None = None, uid: int = 0) -> Any:
    """Run ``snippet`` as a client of ``target`` (a socket path or host:port), in cgroup ``leaf`` or on
    the host, as ``uid``; returns its ``out``."""
    body = textwrap.dedent(snippet)
    imports = "\n".join(line for line in body.splitlines() if line.startswith(("import ", "from ")))
    code = _PRELUDE.replace("{imports}", imports) + body + "\nprint(json.dumps(out), flush=True)\n"
    out = run_client([sys.executable, "-c", code, target, str(uid), json.dumps(arg)], leaf)
    return json.loads(out.strip().splitlines()[-1])
