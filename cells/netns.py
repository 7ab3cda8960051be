"""Named network namespaces (``/run/netns/<name>``, compatible with ``ip netns``) and veth pairs.

Fork-free by design: pyroute2's ``netns.create()`` and ``IPRoute(netns=...)`` fork a helper process,
which is slow and unsafe in a threaded daemon. Instead a short-lived thread of our own does
``unshare(CLONE_NEWNET)`` (namespaces are per thread for the network type), bind-mounts its
``/proc/thread-self/ns/net`` onto the name, opens a netlink socket while still inside (a socket stays
bound to the netns it was created in) and goes back to the original netns. The event loop thread
never changes namespace, so a failure half-way can never strand the daemon in the wrong netns.
The rest is async netlink through pyroute2's ``AsyncIPRoute(use_socket=...)``, imported on the first
create or delete: pyroute2 costs ~13 MB of RSS (and fork time), and naming or listing needs none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from cells import namespaces as ns
from cells.errors import AlreadyExists, InvalidArgument, RuntimeFailure
from cells.spec import Veth
from observe import names
from observe.names import NETNS_DIR
from observe.names import list_netns as list_netns  # cells' callers and tests find it here

if TYPE_CHECKING:
    from pyroute2 import AsyncIPRoute

_NETLINK_ROUTE = 0

T = TypeVar("T")
_setup_lock = threading.Lock()


def validate_netns_name(name: str) -> str:
    if not names.is_segment_name(name):
        raise InvalidArgument("netns", "must be 1-63 of [A-Za-z0-9_.-], starting alphanumeric")
    return name


def netns_path(name: str) -> str:
    return names.netns_path(validate_netns_name(name))


async def in_fresh_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread and await its result.

    Never a pooled executor thread: ``fn`` switches the thread's namespace (net here, mnt in
    :mod:`cells.mountview`), and a thread that failed to switch back must die rather than serve the
    next job in the wrong namespace.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(deliver, None, exc)
        else:
            loop.call_soon_threadsafe(deliver, result, None)

    threading.Thread(target=run, name="cellar-ns", daemon=True).start()
    return await future


def _netlink_socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_ROUTE)


def _is_mountpoint(path: str) -> bool:
    """From mountinfo: ``os.path.ismount`` misses a bind mount of a directory onto itself."""
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def _ensure_netns_dir() -> None:
    """Make /run/netns a shared mount point, as ``ip netns add`` does.

    Shared so that a netns bind-mounted later also appears in mount namespaces cloned earlier
    (process-isolated cells); a bind mount of the directory onto itself makes it a mount point first.
    """
    os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
    with _setup_lock:
        if not _is_mountpoint(NETNS_DIR):
            ns.mount(NETNS_DIR, NETNS_DIR, "none", ns.MS_BIND | ns.MS_REC)
        ns.mount("none", NETNS_DIR, None, ns.MS_SHARED | ns.MS_REC)


def _make_netns(path: str) -> socket.socket:
    """Thread body: new netns bound at ``path``; returns a netlink socket living inside it."""
    original = ns.open_ns("thread-self", "net")
    try:
        ns.unshare(ns.CLONE_NEWNET)
        try:
            ns.mount("/proc/thread-self/ns/net", path, "none", ns.MS_BIND)
            return _netlink_socket()
        finally:
            ns.setns(original, ns.CLONE_NEWNET)
    finally:
        os.close(original)


def _socket_in(path: str) -> socket.socket:
    """Thread body: a netlink socket inside the netns bound at ``path``."""
    original = ns.open_ns("thread-self", "net")
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        ns.setns(target, ns.CLONE_NEWNET)
        try:
            return _netlink_socket()
        finally:
            ns.setns(original, ns.CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(original)


async def _ifindex(ipr: AsyncIPRoute, ifname: str) -> int:
    found = await ipr.link_lookup(ifname=ifname)
    if not found:
        raise RuntimeFailure(f"link {ifname} not found after creation")
    return int(found[0])


async def _address_up(ipr: AsyncIPRoute, ifname: str, cidr: str) -> None:
    index = await _ifindex(ipr, ifname)
    if cidr:
        address, prefixlen = cidr.split("/") if "/" in cidr else (cidr, "128" if ":" in cidr else "32")
        await ipr.addr("add", index=index, address=address, prefixlen=int(prefixlen))
    await ipr.link("set", index=index, state="up")


async def create_netns(name: str, veth: Veth | None = None) -> None:
    """Create the named netns with ``lo`` up and, optionally, a veth pair into it.

    The host end gets its address in the host netns; the peer is created directly inside the netns
    (no move afterwards, so it never shows up in the host even briefly). On any failure everything
    made so far is removed again.
    """
    from pyroute2 import AsyncIPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    path = netns_path(name)
    if veth is not None:
        veth.validate()
    _ensure_netns_dir()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0)
    except FileExistsError:
        raise AlreadyExists(f"network namespace {name!r} exists already") from None
    os.close(fd)
    made_host_end = False
    try:
        inner = await in_fresh_thread(lambda: _make_netns(path))
        try:
            async with AsyncIPRoute(use_socket=inner) as ipr:
                await ipr.link("set", index=await _ifindex(ipr, "lo"), state="up")
                if veth is not None:
                    async with AsyncIPRoute() as host:
                        try:
                            await host.link(
                                "add",
                                ifname=veth.host_ifname,
                                kind="veth",
                                peer={"ifname": veth.cell_ifname, "net_ns_fd": path},
                            )
                        except NetlinkError as exc:
                            if exc.code == errno.EEXIST:
                                raise AlreadyExists(
                                    f"cell.veth.host_ifname: host interface {veth.host_ifname!r} exists already"
                                ) from None
                            raise
                        made_host_end = True
                        await _address_up(host, veth.host_ifname, veth.host_address)
                    await _address_up(ipr, veth.cell_ifname, veth.cell_address)
        finally:
            inner.close()
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await delete_netns(name)
        if veth is not None and made_host_end:  # never a same-named link someone else owns
            with contextlib.suppress(Exception):
                async with AsyncIPRoute() as host:
                    await host.link("del", ifname=veth.host_ifname)
        if isinstance(exc, OSError | NetlinkError):
            raise RuntimeFailure(f"creating network namespace {name!r}: {exc}") from exc
        raise


async def delete_netns(name: str) -> None:
    """Delete the named netns; idempotent.

    Every veth inside is deleted first: deleting one end removes the pair, so the host end goes too
    even while some process still holds the netns alive.
    """
    from pyroute2 import AsyncIPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    path = netns_path(name)
    if not os.path.exists(path):
        return
    try:
        inner = await in_fresh_thread(lambda: _socket_in(path))
    except OSError:
        inner = None  # never bind-mounted (a failed create): just unlink
    if inner is not None:
        try:
            async with AsyncIPRoute(use_socket=inner) as ipr:
                veths = [
                    link["index"]
                    async for link in await ipr.link("dump")
                    if link.get(("linkinfo", "kind")) == "veth"
                ]
                for index in veths:
                    with contextlib.suppress(NetlinkError):
                        await ipr.link("del", index=index)
        finally:
            inner.close()
    with contextlib.suppress(OSError):
        ns.umount(path, ns.MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
