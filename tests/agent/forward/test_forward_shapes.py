"""agent.forward's relay for all four call shapes, against a real grpc.aio upstream server.

A throwaway service ``cellartest.Echo`` is added to the descriptor pool (the relay learns method
shapes from descriptors), served raw by an upstream server on a Unix socket, and fronted by a
second server running only the Forwarder. Checked per shape: payloads, invocation metadata in
(minus hop-by-hop keys), initial + trailing metadata out, status code/details/trailers of errors,
the deadline as remaining time, and cancellation reaching the upstream.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, wrappers_pb2  # noqa: F401 (registers wrappers)

from agent.config import ConfigError, FrontConfig
from agent.forward import Forwarder, Upstream, relayed_metadata, service_methods

SERVICE = "cellartest.Echo"
SHAPES = {"Unary": (False, False), "Fail": (False, False), "Down": (False, True), "Up": (True, False),
          "Chat": (True, True), "Hang": (False, True)}


def _register() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(SERVICE)
        return
    except KeyError:
        pass
    fd = descriptor_pb2.FileDescriptorProto(name="cellartest/echo.proto", package="cellartest",
                                            dependency=["google/protobuf/wrappers.proto"], syntax="proto3")
    svc = fd.service.add(name="Echo")
    for name, (cs, ss) in SHAPES.items():
        svc.method.add(name=name, input_type=".google.protobuf.BytesValue", output_type=".google.protobuf.BytesValue",
                       client_streaming=cs, server_streaming=ss)
    pool.Add(fd)


class Upstream_:
    """The upstream's raw behaviours; records what it saw."""

    def __init__(self) -> None:
        self.metadata: dict[str, Any] = {}
        self.remaining: dict[str, float | None] = {}
        self.cancelled = asyncio.Event()

    def _seen(self, name: str, context: grpc.aio.ServicerContext) -> None:
        self.metadata[name] = dict(context.invocation_metadata() or ())
        self.remaining[name] = context.time_remaining()

    async def unary(self, req: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._seen("Unary", context)
        await context.send_initial_metadata((("x-init", "i"),))
        context.set_trailing_metadata((("x-trail", "t"), ("x-bin-bin", b"\x00\x01")))
        return req[::-1]

    async def fail(self, req: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such file",
                            (("parigot-error", "6"), ("parigot-error-name", "NotExistError")))
        raise AssertionError

    async def down(self, req: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        self._seen("Down", context)
        for i in range(5):
            yield req + str(i).encode()
        context.set_trailing_metadata((("x-count", "5"),))

    async def up(self, reqs: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        self._seen("Up", context)
        return b"|".join([r async for r in reqs])

    async def chat(self, reqs: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for r in reqs:
            if r == b"boom":
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "boom said")
            yield r.upper()

    async def hang(self, req: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        self._seen("Hang", context)
        yield b"first"
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        yield b"never"

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
            "Down": grpc.unary_stream_rpc_method_handler(self.down),
            "Up": grpc.stream_unary_rpc_method_handler(self.up),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
            "Hang": grpc.unary_stream_rpc_method_handler(self.hang),
        })


async def _scenario(tmp: str) -> None:
    up = Upstream_()
    upstream_server = grpc.aio.server()
    upstream_server.add_generic_rpc_handlers((up.handler(),))
    up_sock = os.path.join(tmp, "up.sock")
    upstream_server.add_insecure_port("unix:" + up_sock)
    await upstream_server.start()
    relay = Upstream(SERVICE, FrontConfig(upstream="unix:" + up_sock))
    front_server = grpc.aio.server()
    Forwarder(relay).add_to_server(front_server)
    front_sock = os.path.join(tmp, "front.sock")
    front_server.add_insecure_port("unix:" + front_sock)
    await front_server.start()
    try:
        async with grpc.aio.insecure_channel("unix:" + front_sock) as ch:
            md = (("x-caller", "alice"), ("x-blob-bin", b"\xff\x00"))
            # unary-unary: payload, metadata both ways, deadline as remaining time
            call = ch.unary_unary(f"/{SERVICE}/Unary")(b"abc", metadata=md, timeout=30)
            assert await call == b"cba"
            assert ("x-init", "i") in tuple(await call.initial_metadata())
            trailing = dict(await call.trailing_metadata())
            assert trailing["x-trail"] == "t" and trailing["x-bin-bin"] == b"\x00\x01"
            seen = up.metadata["Unary"]
            assert seen["x-caller"] == "alice" and seen["x-blob-bin"] == b"\xff\x00"
            remaining = up.remaining["Unary"]
            assert remaining is not None and 0 < remaining <= 31  # grpc-timeout is encoded coarsely

            # an error: code, details and trailing metadata unchanged
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch.unary_unary(f"/{SERVICE}/Fail")(b"x", timeout=30)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND and err.value.details() == "no such file"
            assert dict(err.value.trailing_metadata())["parigot-error-name"] == "NotExistError"

            # unary-stream with trailers
            down = ch.unary_stream(f"/{SERVICE}/Down")(b"m", metadata=md, timeout=30)
            assert [m async for m in down] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
            assert dict(await down.trailing_metadata())["x-count"] == "5"

            # stream-unary
            async def gen() -> AsyncIterator[bytes]:
                for part in (b"a", b"b", b"c"):
                    yield part
            assert await ch.stream_unary(f"/{SERVICE}/Up")(gen(), metadata=md, timeout=30) == b"a|b|c"
            assert up.metadata["Up"]["x-caller"] == "alice"

            # stream-stream, then an error status in the middle of the stream
            chat = ch.stream_stream(f"/{SERVICE}/Chat")(timeout=30)
            await chat.write(b"hi")
            assert await chat.read() == b"HI"
            await chat.write(b"boom")
            with pytest.raises(grpc.aio.AioRpcError) as boom:
                await chat.read()
            assert boom.value.code() == grpc.StatusCode.FAILED_PRECONDITION and boom.value.details() == "boom said"

            # no deadline stays no deadline (not a made-up one)
            call = ch.unary_unary(f"/{SERVICE}/Unary")(b"x")
            await call
            assert up.remaining["Unary"] is None or up.remaining["Unary"] > 10**6

            # cancellation: the client gives up, the upstream's handler is cancelled
            hang = ch.unary_stream(f"/{SERVICE}/Hang")(b"", timeout=60)
            assert await hang.read() == b"first"
            hang.cancel()
            await asyncio.wait_for(up.cancelled.wait(), 10)
    finally:
        await front_server.stop(0)
        await upstream_server.stop(0)
        await relay.close()


def test_all_shapes_relay_unchanged() -> None:
    _register()
    with tempfile.TemporaryDirectory(prefix="cellar-fw-", dir="/tmp") as tmp:
        asyncio.run(_scenario(tmp))


def test_unavailable_upstream_is_unavailable() -> None:
    _register()

    async def run(tmp: str) -> None:
        relay = Upstream(SERVICE, FrontConfig(upstream="unix:" + os.path.join(tmp, "nobody.sock")))
        server = grpc.aio.server()
        Forwarder(relay).add_to_server(server)
        sock = os.path.join(tmp, "front.sock")
        server.add_insecure_port("unix:" + sock)
        await server.start()
        try:
            async with grpc.aio.insecure_channel("unix:" + sock) as ch:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await ch.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await server.stop(0)
            await relay.close()

    with tempfile.TemporaryDirectory(prefix="cellar-fw-", dir="/tmp") as tmp:
        asyncio.run(run(tmp))


def test_metadata_filter_and_service_checks() -> None:
    md = (("grpc-timeout", "1S"), ("user-agent", "x"), (":authority", "h"), ("te", "trailers"),
          ("x-keep", "1"), ("authorization", "Bearer t"), ("client-id", "c"))
    assert relayed_metadata(md) == (("x-keep", "1"), ("authorization", "Bearer t"), ("client-id", "c"))
    assert relayed_metadata(None) == ()
    _register()
    assert {m.name for m in service_methods(SERVICE)} == set(SHAPES)
    with pytest.raises(ConfigError, match="unknown service"):
        service_methods("nope.Nope")
    with pytest.raises(ConfigError, match="cannot be fronted"):
        service_methods("grpc.health.v1.Health")
