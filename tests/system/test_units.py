"""The packaged systemd units parse: ``systemd-analyze verify`` reports nothing (an unknown or misspelt
directive is only a warning to systemd, silently ignored at run time: here it fails the test).

The ExecStart binaries are not installed on the test host, so each unit is verified with its ExecStart
pointed at /bin/true; what the unit starts is tested by tests/system/test_deb.py in a Debian root.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO

UNITS = sorted((Path(REPO) / "packaging" / "systemd").glob("*.service"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_verifies_cleanly(unit: Path, tmp_path: Path) -> None:
    text = unit.read_text()
    assert re.search(r"^ExecStart=/usr/s?bin/\S+", text, re.MULTILINE), unit
    copy = tmp_path / unit.name
    copy.write_text(re.sub(r"^ExecStart=/usr/s?bin/\S+", "ExecStart=/bin/true", text, flags=re.MULTILINE))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stderr == "" and result.stdout == "", result


def test_the_saver_unit_is_shipped_disabled_and_reads_its_defaults() -> None:
    unit = (Path(REPO) / "packaging" / "systemd" / "cellar-saver.service").read_text()
    assert "EnvironmentFile=-/etc/default/cellar-saver" in unit
    assert "ExecStart=/usr/bin/cellar-saver $CELLAR_SAVER_OPTS" in unit
    postinst = (Path(REPO) / "packaging" / "debian" / "postinst").read_text()
    assert "enable --now cellar-saver" not in postinst and "enable cellar-saver" not in postinst
