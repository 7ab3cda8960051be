"""The daemon log bus: history then live, and a slow subscriber gets a marker instead of blocking anyone."""

import asyncio
import io
import json

import structlog

from observe.daemonlog import DaemonLogBus, configure


def test_configure_renders_json_and_publishes() -> None:
    out = io.StringIO()
    bus = configure(stream=out, level="info")
    log = structlog.get_logger()
    log.info("cell.allocated", cell="web", cgroup="/x")
    log.debug("hidden")
    line = json.loads(out.getvalue().splitlines()[0])
    assert line["event"] == "cell.allocated" and line["cell"] == "web" and line["level"] == "info"
    assert [e["event"] for e in bus.history()] == ["cell.allocated"]


def test_history_then_live() -> None:
    bus = DaemonLogBus()
    bus.publish({"event": "old"})

    async def main() -> list[str]:
        sub = bus.subscribe()
        first = await anext(sub)
        bus.publish({"event": "new", "obj": object()})
        second = await anext(sub)
        assert isinstance(second["obj"], str)  # non-plain values arrive as their repr
        await sub.aclose()
        return [first["event"], second["event"]]

    assert asyncio.run(main()) == ["old", "new"]


def test_slow_subscriber_gets_dropped_marker() -> None:
    bus = DaemonLogBus(history=10, queue=5)

    async def main() -> list[dict]:
        sub = bus.subscribe()
        bus.publish({"event": "e0"})
        assert (await anext(sub))["event"] == "e0"  # history replay
        for i in range(1, 21):  # the subscriber does not read: 5 queued, 15 dropped, nobody waits
            bus.publish({"event": f"e{i}"})
        got = [await anext(sub) for _ in range(6)]
        bus.publish({"event": "e21"})
        got.append(await anext(sub))
        await sub.aclose()
        return got

    got = asyncio.run(main())
    assert [g["event"] for g in got] == ["e1", "e2", "e3", "e4", "e5", "daemonlog.dropped", "e21"]
    assert got[5]["count"] == 15


def test_publish_from_another_thread_wakes_subscriber() -> None:
    bus = DaemonLogBus()

    async def main() -> str:
        sub = bus.subscribe()
        task = asyncio.ensure_future(anext(sub))
        await asyncio.sleep(0.01)
        await asyncio.to_thread(bus.publish, {"event": "from-thread"})
        event = await asyncio.wait_for(task, 2)
        await sub.aclose()
        return event["event"]

    assert asyncio.run(main()) == "from-thread"
