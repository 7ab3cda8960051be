"""Helper code for the tests (fixtures themselves are in tests/conftest.py and each directory's conftest).

- ``REPO``: the repository root (the daemons' cwd and PYTHONPATH).
- :mod:`.cellard`: a REAL cellard (config, PKI, start/restart/teardown, log events, channels).
- :mod:`.api`: the cells API bound to one daemon (``Api``, ``running_cellard``, ``code_of``).
- :mod:`.local`: the node-local endpoint's listeners and parigot errors.
- :mod:`.runtime`: a supervisor config private to one test; :mod:`.cleanup`: destroying what a runtime
  made (cgroups, netns, supervisors), also after failures; :mod:`.cgroups`: the host's cgroup layout.
- :mod:`.timeouts`: every wait, scaled for slow hosts (``CELLAR_TEST_TIMEOUT_SCALE``).
- :mod:`.healthwait`: waiting for a health status.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
