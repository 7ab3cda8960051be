"""What the security profile costs a spawn, step by step, measured in-process (no gRPC, no supervisor).

    .venv/bin/python bench/profile_cost.py [--runs 400]

Spawns ``/bin/true`` with the C spawner (cells._spawn) into a throwaway leaf cgroup and waits for it,
rotating through these variants so that all see the same load: no profile (``--privileged``);
capabilities + no_new_privs; + the seccomp filter; + a cgroup namespace (the full default profile);
+ entering a pinned mount view (what a plain cell's Start does). Prints p50/p99 per variant and the
difference to the first at p50 -- the issue's budget for the whole profile is 0.5 ms at p50.
Run as root; the cgroup and the pinned view are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cells import capabilities, mountview, profile, spawn  # noqa: E402
from cells import namespaces as ns  # noqa: E402
from cells.cgroup import detect  # noqa: E402
from cells.netns import in_fresh_thread  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def once(procs: list[str], prof: profile.SecurityProfile | None, view_fd: int | None) -> float:
    devnull = spawn.open_devnull()
    try:
        req = spawn.ExecRequest(
            argv=["/bin/true"], env={"PATH": spawn.DEFAULT_PATH}, setup=None, stdin=devnull, stdout=devnull,
            stderr=devnull, cgroup_procs=procs, profile=prof,
            namespaces=[(view_fd, ns.CLONE_NEWNS)] if view_fd is not None else [],
        )
        t = time.perf_counter()
        pid = spawn.clone_exec(req)
        os.waitpid(pid, 0)
        return (time.perf_counter() - t) * 1000
    finally:
        os.close(devnull)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    args = parser.parse_args()
    import asyncio

    backend = detect(f"cellar-bench-{uuid.uuid4().hex[:8]}")
    backend.create("cell")
    backend.create("cell/exe.x")
    procs = backend.procs_files("cell/exe.x")
    run_dir = tempfile.mkdtemp(prefix="cellar-bench-")
    views_dir = os.path.join(run_dir, "views")
    pin = os.path.join(views_dir, "cell")
    try:
        mountview.ensure_views_dir(views_dir)
        view = mountview.View(
            hidden=(run_dir,), cgroups=mountview.cgroup_mounts([os.path.dirname(p) for p in backend.procs_files("cell")])
        )
        mountview.pin_namespace(asyncio.run(in_fresh_thread(lambda: mountview.build_in_new_namespace(view))), pin)
        view_fd = os.open(pin, os.O_RDONLY | os.O_CLOEXEC)
        default = profile.for_executable(*_specs())
        caps = capabilities.DEFAULT_CAPS
        variants: list[tuple[str, profile.SecurityProfile | None, int | None]] = [
            ("--privileged (no profile)", None, None),
            ("capabilities + no_new_privs", profile.SecurityProfile(caps, True, None, 0), None),
            ("+ seccomp", profile.SecurityProfile(caps, True, default.seccomp, 0), None),
            ("+ cgroup namespace (default profile)", default, None),
            ("+ the cell's mount view (plain cell Start)", default, view_fd),
        ]
        times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
        for _name, prof, fd in variants:  # warm up
            once(procs, prof, fd)
        for i in range(args.runs):
            k = i % len(variants)
            for name, prof, fd in variants[k:] + variants[:k]:
                times[name].append(once(procs, prof, fd))
        base = pct(times[variants[0][0]], 50)
        print(f"/bin/true spawned + reaped by the C spawner, {args.runs} runs each, ms   p50     p99   vs first")
        for name, _, _ in variants:
            p50 = pct(times[name], 50)
            print(f"  {name:48s}{p50:7.3f} {pct(times[name], 99):7.3f}  {p50 - base:+.3f}")
        full = pct(times[variants[-1][0]], 50) - base
        print(f"the whole profile, mount view included: {full:+.3f} ms at p50   target <= 0.5 ms  "
              f"{'OK' if full <= 0.5 else 'MISSED'}   (mean of all: {statistics.mean(sum(times.values(), [])):.3f})")
        os.close(view_fd)
        return 0
    finally:
        mountview.release_views_dir(views_dir)
        os.rmdir(run_dir)
        backend.remove_root()


def _specs() -> tuple[object, object]:
    from cells.spec import CellSpec, ExecutableSpec

    return CellSpec("cell"), ExecutableSpec("cell", "x", argv=("/bin/true",))


if __name__ == "__main__":
    sys.exit(main())
