"""Stop the supervisor and every workload it owns: what removing the package means.

Installed as /usr/lib/cellar/shutdown-runtime (run by /opt/cellar/bin/python from prerm remove). It
reads cellard's config (``--config``, default /etc/cellar/cellard.toml), connects to that config's
supervisor without starting one, frees every cell (workloads killed, cgroups and netns removed) and
waits for the supervisor to exit. Nothing running: nothing to do, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from agent.config import ConfigError, load, runtime_config
from cells.client import RuntimeClient
from cells.errors import CellError


async def shutdown(config_path: str | None) -> int:
    cfg = load(config_path)
    try:
        client = await RuntimeClient.connect(runtime_config(cfg), start=False, timeout=5)
    except (CellError, OSError):
        print("shutdown-runtime: no supervisor running")
        return 0
    await client.shutdown_supervisor(kill_workloads=True)
    print("shutdown-runtime: every cell freed, supervisor stopped")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="shutdown-runtime", description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    args = parser.parse_args()
    try:
        sys.exit(asyncio.run(shutdown(args.config)))
    except ConfigError as exc:
        print(f"shutdown-runtime: config error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
