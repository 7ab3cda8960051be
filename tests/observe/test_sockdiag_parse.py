"""The sock_diag decoder on hand-built replies: the per-layout fast path must never change an answer.

Replies of one dump are usually laid out alike, and the decoder reuses the first one's layout; these
mix layouts (IPv4/IPv6, an extra attribute, a missing cgroup id, a reply split across recvs) and
check every reply still decodes as a plain attribute walk would.
"""

from __future__ import annotations

import socket
import struct

from observe import sockdiag
from observe.inventory_owners import service_names


def attr(atype: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), atype) + payload + b"\0" * (-len(payload) % 4)


def reply(family: int, ip: str, port: int, inode: int, *, cgroup: int | None = 7, v6only: int | None = None,
          extra: bytes = b"", ifindex: int = 0) -> bytes:
    raw = socket.inet_pton(family, ip).ljust(16, b"\0")
    body = struct.pack("=BBBB", family, 10, 0, 0) + port.to_bytes(2, "big") + b"\0\0" + raw + b"\0" * 16
    body += struct.pack("=IQIIIII", ifindex, 0, 0, 0, 0, 0, inode)
    body += attr(8, b"\0")  # INET_DIAG_SHUTDOWN
    if v6only is not None:
        body += attr(sockdiag.INET_DIAG_SKV6ONLY, bytes([v6only]))
    body += extra
    if cgroup is not None:
        body += attr(sockdiag.INET_DIAG_CGROUP_ID, struct.pack("=Q", cgroup))
    return struct.pack("=IHHII", 16 + len(body), sockdiag.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body


DONE = struct.pack("=IHHIIi", 20, sockdiag.NLMSG_DONE, 2, 1, 0, 0)


def parse(*chunks: bytes) -> list[sockdiag.Listener]:
    out: list[sockdiag.Listener] = []
    layouts: dict[tuple[int, int], object] = {}
    for chunk in chunks:
        if sockdiag._parse(memoryview(chunk), len(chunk), "tcp", out, layouts):  # type: ignore[arg-type]
            break
    return out


def test_mixed_layouts_decode_like_a_walk():
    v4, v6 = socket.AF_INET, socket.AF_INET6
    replies = [
        reply(v4, "10.0.0.1", 80, 1), reply(v4, "0.0.0.0", 81, 2, cgroup=99),
        reply(v4, "10.0.0.2", 82, 3, extra=attr(30, b"\1\2\3\4\5\6\7\x08")),  # unknown attribute: longer
        reply(v4, "10.0.0.3", 83, 4, cgroup=None),  # shorter, no cgroup id
        reply(v4, "10.0.0.4", 84, 5, ifindex=3),
        reply(v6, "::", 85, 6, v6only=0), reply(v6, "fd00::1", 86, 7, v6only=1),
        reply(v6, "::ffff:10.0.0.9", 87, 8, v6only=0),
    ]
    data = b"".join(replies) + DONE
    expected = [
        ("tcp", v4, socket.inet_pton(v4, "10.0.0.1").ljust(16, b"\0"), 80, 0, 1, 7, True),
        ("tcp", v4, bytes(16), 81, 0, 2, 99, True),
        ("tcp", v4, socket.inet_pton(v4, "10.0.0.2").ljust(16, b"\0"), 82, 0, 3, 7, True),
        ("tcp", v4, socket.inet_pton(v4, "10.0.0.3").ljust(16, b"\0"), 83, 0, 4, 0, True),
        ("tcp", v4, socket.inet_pton(v4, "10.0.0.4").ljust(16, b"\0"), 84, 3, 5, 7, True),
        ("tcp", v6, bytes(16), 85, 0, 6, 7, False),
        ("tcp", v6, socket.inet_pton(v6, "fd00::1"), 86, 0, 7, 7, True),
        ("tcp", v6, socket.inet_pton(v6, "::ffff:10.0.0.9"), 87, 0, 8, 7, False),
    ]
    assert parse(data) == expected
    cut = len(replies[0]) + len(replies[1]) // 2  # a reply split across two recvs is still decoded once
    assert parse(data[:cut], data[len(replies[0]):]) == expected
    many = b"".join(reply(v4, "10.0.0.1", 1000 + i, 100 + i) for i in range(50)) + replies[5] + DONE
    assert [x[3] for x in parse(many)] == [*range(1000, 1050), 85]
    assert sockdiag.address(v6, expected[7][2]) == "10.0.0.9"
    assert sockdiag.is_wildcard(v4, expected[1][2]) and sockdiag.is_wildcard(v6, expected[5][2])


def test_error_reply_raises():
    err = struct.pack("=IHHIIi", 20, sockdiag.NLMSG_ERROR, 0, 1, 0, -2)
    try:
        parse(err)
    except sockdiag.SockDiagError as exc:
        assert exc.errno == 2
    else:
        raise AssertionError("no error")


def test_service_names_agree_with_getservbyport():
    table = service_names()
    for port, proto in ((22, "tcp"), (53, "udp"), (443, "tcp"), (123, "udp"), (1, "tcp"), (65000, "udp")):
        try:
            name = socket.getservbyport(port, proto)
        except OSError:
            name = ""
        assert table.get((port, proto), "") == name
