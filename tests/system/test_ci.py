"""CI runs exactly what the README tells a newcomer to run."""

from __future__ import annotations

import os
import re

from tests.support import REPO


def test_ci_runs_the_readme_test_command():
    script = (REPO / ".ci" / "run").read_text()
    match = re.search(r'^TEST_COMMAND="(.+)"$', script, re.MULTILINE)
    assert match, ".ci/run has no TEST_COMMAND line"
    assert match.group(1) in (REPO / "README.md").read_text()
    assert os.access(REPO / ".ci" / "run", os.X_OK)
