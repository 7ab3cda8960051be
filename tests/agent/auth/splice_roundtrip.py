"""One byte round trip through a peer proxy (agent.auth.unixpeer / agent.auth.tcppeer) to an echo upstream.

The client's bytes and its EOF are already queued when the proxy accepts the connection, the way a
gRPC client sends its HTTP/2 preface right after connect(): they reach the proxy before the upstream
connection exists. Runnable as a script, so a test can run it under another interpreter (Debian's
``/usr/bin/python3``, the one the Debian package's venv uses):

    python3 tests/agent/auth/splice_roundtrip.py BASE_DIR [unix|tcp]   -> prints OK, or what came back
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

from agent.auth.unixpeer import UnixPeerProxy

PAYLOAD = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(range(256)) * 256  # preface + 64 KiB
TIMEOUT_S = 30.0  # a bound for a broken proxy, not a speed expectation


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = await reader.read()  # until the client's EOF arrives through the proxy
    writer.write(data)
    await writer.drain()
    writer.close()


async def roundtrip(base: str, kind: str = "unix", own_thread: bool = False, payload: bytes = PAYLOAD) -> bytes:
    """Send ``payload`` + EOF through a fresh proxy of ``kind`` under ``base``; what the echo returned."""
    internal = os.path.join(base, "internal")
    UnixPeerProxy.prepare_internal_dir(internal)
    upstream = os.path.join(internal, "grpc.sock")
    server = await asyncio.start_unix_server(_echo, upstream)
    proxy: UnixPeerProxy
    if kind == "unix":
        proxy = UnixPeerProxy(os.path.join(base, "public.sock"), internal, 0o600, os.getgid())
        family, address = socket.AF_UNIX, proxy.public_path
    else:
        from agent.auth.tcppeer import TcpPeerProxy, bind_tcp_listener

        tcp = TcpPeerProxy(bind_tcp_listener("127.0.0.1:0"), internal, upstream)
        family, address, proxy = socket.AF_INET, tcp._sock.getsockname(), tcp
    client = socket.socket(family, socket.SOCK_STREAM)
    try:
        await proxy.start(own_thread=own_thread)
        # Blocking, without yielding to the loop: connect() completes from the listen backlog, so the
        # bytes and the EOF are queued before the proxy has accepted, let alone connected upstream.
        client.connect(address)
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        reply = bytearray()
        while chunk := await asyncio.wait_for(loop.sock_recv(client, 1 << 16), TIMEOUT_S):
            reply += chunk
        return bytes(reply)
    finally:
        client.close()
        await proxy.close()
        server.close()
        await server.wait_closed()


def main(argv: list[str]) -> int:
    reply = asyncio.run(roundtrip(argv[1], argv[2] if len(argv) > 2 else "unix"))
    if reply == PAYLOAD:
        print("OK")
        return 0
    print(f"python {sys.version.split()[0]}: sent {len(PAYLOAD)} bytes, got back {len(reply)}: {reply[:40]!r}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
