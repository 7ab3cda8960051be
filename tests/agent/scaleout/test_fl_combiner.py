"""The combiner's state machine on its own: FIFO queues, PollAndReport, cancel, timeout, liveness."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.scaleout.combiner import Combiner, Task
from agent.scaleout.errors import FailedPrecondition, InvalidArgument, NotFound


@pytest.fixture
def combiner(tmp_path: Path) -> Combiner:
    c = Combiner(tmp_path / "scaleout.db")
    c.seen("c1", "one")
    c.seen("c2", "two")
    return c


def poll(c: Combiner, client: str, cid: str = "", status: str = "", done: bool = False) -> Task | tuple[str, str] | None:
    return c.poll_and_report(client, cid, status, done, "")


def test_tasks_are_fifo_per_client(combiner: Combiner) -> None:
    a = combiner.push("c1", "Fedn_ModelUpdate", "m")
    b = combiner.push("c1", "Fedn_Validation", "m")
    other = combiner.push("c2", "Fedn_ModelUpdate", "m")
    assert a.status == "NEW" and len({a.correlation_id, b.correlation_id, other.correlation_id}) == 3
    got = poll(combiner, "c1")
    assert isinstance(got, Task) and got.correlation_id == a.correlation_id
    assert poll(combiner, "c1", a.correlation_id, "RUNNING") is None  # still running: nothing new
    assert combiner.task(a.correlation_id).status == "RUNNING"
    nxt = poll(combiner, "c1", a.correlation_id, "COMPLETED", done=True)
    assert isinstance(nxt, Task) and nxt.correlation_id == b.correlation_id
    assert combiner.task(a.correlation_id).status == "COMPLETED"
    assert poll(combiner, "c1", b.correlation_id, "FAILED", done=True) is None  # queue empty
    assert combiner.task(b.correlation_id).status == "FAILED"
    got2 = poll(combiner, "c2")
    assert isinstance(got2, Task) and got2.correlation_id == other.correlation_id


def test_cancel_queued_and_running(combiner: Combiner) -> None:
    a = combiner.push("c1", "Fedn_ModelUpdate", "m")
    b = combiner.push("c1", "Fedn_ModelUpdate", "m")
    assert combiner.cancel(b.correlation_id).status == "CANCELLED"  # never delivered
    poll(combiner, "c1")
    combiner.cancel(a.correlation_id)
    assert poll(combiner, "c1", a.correlation_id, "RUNNING") == (a.correlation_id, "INTERRUPTED")
    assert poll(combiner, "c1", a.correlation_id, "INTERRUPTED", done=True) is None  # b is not handed out
    assert combiner.task(a.correlation_id).status == "INTERRUPTED"
    with pytest.raises(FailedPrecondition):
        combiner.cancel(a.correlation_id)
    with pytest.raises(NotFound):
        combiner.cancel("no-such-task")


def test_timeout(combiner: Combiner) -> None:
    a = combiner.push("c1", "Fedn_ModelUpdate", "m", timeout_s=0.05)
    poll(combiner, "c1")
    time.sleep(0.1)
    assert poll(combiner, "c1", a.correlation_id, "RUNNING") == (a.correlation_id, "TIMEOUT")
    assert combiner.task(a.correlation_id).status == "TIMEOUT"
    poll(combiner, "c1", a.correlation_id, "INTERRUPTED", done=True)
    assert combiner.task(a.correlation_id).status == "TIMEOUT"  # the server's verdict stands


def test_unknown_and_foreign_correlation_ids(combiner: Combiner) -> None:
    theirs = combiner.push("c2", "Fedn_ModelUpdate", "m")
    assert poll(combiner, "c1", "made-up", "RUNNING") == ("made-up", "INTERRUPTED")
    assert poll(combiner, "c1", theirs.correlation_id, "RUNNING") == (theirs.correlation_id, "INTERRUPTED")
    with pytest.raises(NotFound):
        combiner.result_for("c1", theirs.correlation_id)
    with pytest.raises(InvalidArgument):
        poll(combiner, "c1", "x", "BOGUS")


def test_idle_report_fails_a_lost_task(combiner: Combiner) -> None:
    a = combiner.push("c1", "Fedn_ModelUpdate", "m")
    poll(combiner, "c1")
    assert poll(combiner, "c1") is None  # the client restarted and forgot it
    assert combiner.task(a.correlation_id).status == "FAILED"


def test_push_validation(combiner: Combiner) -> None:
    with pytest.raises(NotFound):
        combiner.push("never-seen", "Fedn_ModelUpdate", "m")
    with pytest.raises(InvalidArgument):
        combiner.push("../etc", "Fedn_ModelUpdate", "m")
    with pytest.raises(InvalidArgument):
        combiner.push("c1", "Train", "m")
    with pytest.raises(InvalidArgument):
        combiner.push("c1", "Fedn_ModelUpdate", "m", data="{not json")
    with pytest.raises(InvalidArgument):
        combiner.push("c1", "Fedn_ModelUpdate", "m", data="[1]")
    assert combiner.push("c1", "Custom_hello", "", data='{"x": 1}').type == "Custom_hello"


def test_liveness(tmp_path: Path) -> None:
    c = Combiner(tmp_path / "db", offline_after_s=0.05)
    c.announce("c1", "one", "Connect")
    (client,) = c.clients()
    assert client.online and client.connected and client.name == "one"
    time.sleep(0.1)
    assert not c.clients()[0].online
    c.seen("c1")
    assert c.clients()[0].online
    c.announce("c1", "one", "Disconnect")
    assert not c.clients()[0].online and not c.clients()[0].connected


def test_everything_survives_a_restart(tmp_path: Path) -> None:
    c = Combiner(tmp_path / "db")
    c.seen("c1")
    queued = c.push("c1", "Fedn_ModelUpdate", "m")
    c.add_record("status", "c1", body='{"status": "hi"}')
    c.close()
    again = Combiner(tmp_path / "db")
    assert [t.correlation_id for t in again.tasks()] == [queued.correlation_id]
    assert [r.kind for r in again.records()] == ["status"]
    assert [cl.client_id for cl in again.clients()] == ["c1"] and not again.clients()[0].online
    got = poll(again, "c1")
    assert isinstance(got, Task) and got.correlation_id == queued.correlation_id


def test_task_stream_wakes_on_push(combiner: Combiner) -> None:
    async def scenario() -> bool:
        waiter = asyncio.create_task(combiner.wait_for_task("c1", 600))
        await asyncio.sleep(0)
        assert not waiter.done()
        combiner.push("c1", "Fedn_ModelUpdate", "m")
        for _ in range(10):
            await asyncio.sleep(0)
        return waiter.done()

    assert asyncio.run(scenario())  # woken by the push, not by the 600 s timeout
    assert isinstance(combiner.next_task("c1"), Task)


def test_a_poll_after_disconnect_does_not_bring_a_client_back_online(tmp_path: Path) -> None:
    """The official client's polling thread can send one more request after its Disconnect (seen under
    load in tests/agent/scaleout/test_fl_client_loop.py): it stays offline until it Connects again."""
    c = Combiner(tmp_path / "db")
    c.announce("edge", "edge", "Connect")
    assert c.is_online("edge")
    c.announce("edge", "edge", "Disconnect")
    c.seen("edge")
    assert not c.is_online("edge")
    c.announce("edge", "edge", "Connect")
    assert c.is_online("edge")


def test_counters_for_the_metrics_listener(combiner: Combiner) -> None:
    """Tasks queued, ended (once each, by final status) and polls, in agent.core.counters (served by /metrics)."""
    from agent.core.counters import REGISTRY

    def count(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = {"queued": count("cellar_scaleout_tasks_queued_total"), "polls": count("cellar_scaleout_polls_total"),
              "completed": count("cellar_scaleout_tasks_finished_total", status="COMPLETED"),
              "cancelled": count("cellar_scaleout_tasks_finished_total", status="CANCELLED")}
    a = combiner.push("c1", "Fedn_ModelUpdate", "m")
    b = combiner.push("c1", "Fedn_ModelUpdate", "m")
    combiner.cancel(b.correlation_id)
    assert isinstance(poll(combiner, "c1"), Task)
    combiner.result_for("c1", a.correlation_id)  # COMPLETED by its result ...
    poll(combiner, "c1", a.correlation_id, "COMPLETED", done=True)  # ... and the done report is no second end
    assert count("cellar_scaleout_tasks_queued_total") - before["queued"] == 2
    assert count("cellar_scaleout_polls_total") - before["polls"] == 2
    assert count("cellar_scaleout_tasks_finished_total", status="COMPLETED") - before["completed"] == 1
    assert count("cellar_scaleout_tasks_finished_total", status="CANCELLED") - before["cancelled"] == 1
