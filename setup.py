"""Build hook for the C extensions; all other metadata lives in pyproject.toml.

``cells._spawn`` (clone3 spawner of the supervisor) is optional: without a C compiler or Python
headers the build goes on and :mod:`cells.spawn` falls back to its fork path. ``observe._records``
(the per-record loops of the log path) is optional the same way: :mod:`observe.records` falls back to
Python loops. ``agent.auth._front`` (the silent phase of the mTLS TCP listener in a native thread) is
optional the same way: :mod:`agent.auth.tlsfront` falls back to its event-loop path.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("cells._spawn", ["cells/_spawn.c"], optional=True),
    Extension("observe._records", ["observe/_records.c"], optional=True),
    Extension("agent.auth._front", ["agent/auth/_front.c"], optional=True),
])
