"""Build hook for the one C extension; all other metadata lives in pyproject.toml.

``cells._spawn`` (clone3 spawner of the supervisor) is optional: without a C compiler or Python
headers the build goes on and :mod:`cells.spawn` falls back to its fork path.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("cells._spawn", ["cells/_spawn.c"], optional=True)])
