"""A writer process killed with SIGKILL mid-flood, then restarted: nothing it reported is lost or doubled."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from observe.logread import LogReader
from observe.logstore import LogWriter
from observe.records import Stream

CHILD = """
import sys
from pathlib import Path
from observe.logstore import LogWriter
from observe.records import Stream
w = LogWriter(Path(sys.argv[1]), segment_bytes=256 * 1024, max_segments=1000)
i = 0
while True:
    batch = [(b"%010d" % (i + k) + b"." * (i % 300), False) for k in range(50)]
    seq = w.append_lines(Stream.STDOUT, batch)
    i += 50
    print(seq, i, flush=True)
"""


def test_sigkill_mid_flood_then_restart(tmp_path: Path) -> None:
    d = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(d)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    reported = 0
    deadline = time.monotonic() + 20
    while reported < 20_000 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        seq, count = map(int, line.split())
        assert seq == count
        reported = seq
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert reported >= 20_000

    w = LogWriter(d)  # the restarted supervisor resumes the run
    resumed_at = w.next_seq
    assert resumed_at > reported
    w.append_lines(Stream.STDERR, [(b"after restart", False)])
    w.close()

    recs = list(LogReader(d).read())
    assert [r.seq for r in recs] == list(range(1, resumed_at + 1))
    assert [int(r.data[:10]) for r in recs[:-1]] == list(range(resumed_at - 1))
    assert recs[-1].data == b"after restart"
