"""A restart policy from a client is bounded (issue 14): INVALID_ARGUMENT naming the field, never INTERNAL.

As an attacker would try: negative, NaN and infinite delays, a cap below the delay, an unknown mode,
a burst of zero or 2^32-1, a window of years; and, over the whole wire range of every field, no
status but OK / INVALID_ARGUMENT, nothing started for a refused policy, and a started one that obeys
its bounds (a zero delay with no limit restarts, it does not spin the supervisor out of its loop).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto.aurae import runtime_pb2
from proto.cellar.v1 import types_pb2
from tests.support.api import Api, running_cellard
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root

ON_FAILURE = types_pb2.RESTART_MODE_ON_FAILURE


@pytest.fixture(scope="module")
def daemon() -> Iterator[Any]:
    with running_cellard() as d:
        yield d


@pytest.fixture(scope="module")
def api(daemon: Any) -> Iterator[Api]:
    channel = daemon.channel()
    client = Api(daemon, channel)
    client.allocate("rb")
    try:
        yield client
    finally:
        client.free_all()
        channel.close()


def start(api: Api, name: str, restart: types_pb2.RestartPolicy) -> grpc.StatusCode | str:
    """The status of a Start with ``restart`` (its details when INVALID_ARGUMENT)."""
    exe = runtime_pb2.Executable(cell_name="rb", name=name, argv=["sleep", "100"], restart=restart)
    try:
        api.runtime.Start(runtime_pb2.StartCellRequest(executable=exe), timeout=scaled(30))
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            return str(exc.details())
        return exc.code()  # type: ignore[no-any-return]
    api.stop("rb", name, grace_ms=0)
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"mode": 9}, "executable.restart.mode"),
        ({"delay_s": -1.0}, "executable.restart.delay_s"),
        ({"delay_s": math.nan}, "executable.restart.delay_s"),
        ({"delay_s": math.inf}, "executable.restart.delay_s"),
        ({"max_delay_s": -math.inf}, "executable.restart.max_delay_s"),
        ({"delay_s": 60.0, "max_delay_s": 1.0}, "executable.restart.max_delay_s"),
        ({"reset_after_s": 1e300}, "executable.restart.reset_after_s"),
        ({"limit_burst": 0}, "executable.restart.limit_burst"),
        ({"limit_burst": 2**32 - 1}, "executable.restart.limit_burst"),
        ({"limit_interval_s": 86_401.0}, "executable.restart.limit_interval_s"),
        ({"limit_interval_s": math.nan}, "executable.restart.limit_interval_s"),
    ],
)
def test_bad_policies_are_invalid_argument_naming_the_field(api: Api, fields: dict[str, Any], field: str) -> None:
    details = start(api, "bad", types_pb2.RestartPolicy(**{"mode": ON_FAILURE, **fields}))
    assert isinstance(details, str) and field in details, details
    assert "bad" not in {e.name for e in api.inspect("rb").executables}  # nothing was started


DOUBLES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 86_400.0, 604_800.0]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mode=st.integers(0, 2**31 - 1),
    delay=DOUBLES,
    cap=DOUBLES,
    reset=DOUBLES,
    burst=st.integers(0, 2**32 - 1),
    window=DOUBLES,
)
def test_any_policy_is_ok_or_invalid_argument(api: Api, mode: int, delay: float, cap: float, reset: float,
                                              burst: int, window: float) -> None:
    restart = types_pb2.RestartPolicy(mode=mode % 5, delay_s=delay, max_delay_s=cap, reset_after_s=reset,
                                      limit_burst=burst, limit_interval_s=window)
    got = start(api, "fuzz", restart)
    assert got == grpc.StatusCode.OK or isinstance(got, str), got


def test_a_zero_delay_without_a_limit_leaves_the_supervisor_answering(api: Api) -> None:
    """The tightest loop a client can ask for: each restart still waits for the run's exit."""
    exe = runtime_pb2.Executable(cell_name="rb", name="spin", argv=["true"],
                                 restart=types_pb2.RestartPolicy(mode=types_pb2.RESTART_MODE_ALWAYS,
                                                                 delay_s=0, limit_interval_s=0))
    api.runtime.Start(runtime_pb2.StartCellRequest(executable=exe), timeout=scaled(30))
    time.sleep(1.0)
    started = time.monotonic()
    (info,) = [e for e in api.inspect("rb").executables if e.name == "spin"]
    assert time.monotonic() - started < scaled(5)  # answered while it spins
    assert info.restarts > 3
    api.stop("rb", "spin", grace_ms=0)
    (after,) = [e for e in api.inspect("rb").executables if e.name == "spin"]
    time.sleep(0.3)
    (later,) = [e for e in api.inspect("rb").executables if e.name == "spin"]
    assert later.run == after.run  # Stop ended the loop
