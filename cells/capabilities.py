"""Linux capabilities by name, and the set a contained workload keeps.

:data:`DEFAULT_CAPS` is Docker's and ``runc spec``'s default set of 14: what a root process in a
container needs for ordinary work (chown files, bind low ports, switch users, send signals, ping),
and nothing that reaches the kernel itself (no SYS_ADMIN, SYS_MODULE, SYS_PTRACE, SYS_RAWIO,
NET_ADMIN, SYS_TIME, BPF, ...). Names are accepted with or without the ``CAP_`` prefix, in any case,
like ``docker run --cap-add``; ``ALL`` stands for every capability the kernel knows.
"""

from __future__ import annotations

from collections.abc import Iterable

from cells.errors import InvalidArgument

#: Capability numbers from <linux/capability.h> (kernel 6.x).
CAPABILITIES: dict[str, int] = {
    "CHOWN": 0,
    "DAC_OVERRIDE": 1,
    "DAC_READ_SEARCH": 2,
    "FOWNER": 3,
    "FSETID": 4,
    "KILL": 5,
    "SETGID": 6,
    "SETUID": 7,
    "SETPCAP": 8,
    "LINUX_IMMUTABLE": 9,
    "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11,
    "NET_ADMIN": 12,
    "NET_RAW": 13,
    "IPC_LOCK": 14,
    "IPC_OWNER": 15,
    "SYS_MODULE": 16,
    "SYS_RAWIO": 17,
    "SYS_CHROOT": 18,
    "SYS_PTRACE": 19,
    "SYS_PACCT": 20,
    "SYS_ADMIN": 21,
    "SYS_BOOT": 22,
    "SYS_NICE": 23,
    "SYS_RESOURCE": 24,
    "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26,
    "MKNOD": 27,
    "LEASE": 28,
    "AUDIT_WRITE": 29,
    "AUDIT_CONTROL": 30,
    "SETFCAP": 31,
    "MAC_OVERRIDE": 32,
    "MAC_ADMIN": 33,
    "SYSLOG": 34,
    "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36,
    "AUDIT_READ": 37,
    "PERFMON": 38,
    "BPF": 39,
    "CHECKPOINT_RESTORE": 40,
}

DEFAULT_CAPS: frozenset[str] = frozenset(
    {
        "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
        "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
    }
)  # fmt: skip

ALL_CAPS: frozenset[str] = frozenset(CAPABILITIES)
MAX_CAP_NAMES = 64


def normalize(name: str, field_name: str) -> str:
    """``cap_net_admin`` / ``NET_ADMIN`` / ``all`` -> ``NET_ADMIN`` / ``ALL``; unknown names refused."""
    upper = name.strip().upper()
    upper = upper.removeprefix("CAP_")
    if upper != "ALL" and upper not in CAPABILITIES:
        raise InvalidArgument(field_name, f"unknown capability {name!r}")
    return upper


def validate_names(names: Iterable[str], field_name: str) -> tuple[str, ...]:
    """Normalized, de-duplicated, order kept; at most :data:`MAX_CAP_NAMES`."""
    out: list[str] = []
    for name in names:
        norm = normalize(name, field_name)
        if norm not in out:
            out.append(norm)
    if len(out) > MAX_CAP_NAMES:
        raise InvalidArgument(field_name, f"at most {MAX_CAP_NAMES} names")
    return tuple(out)


def _expand(names: Iterable[str]) -> set[str]:
    names = set(names)
    return set(ALL_CAPS) if "ALL" in names else names


def effective_set(*layers: tuple[Iterable[str], Iterable[str]], base: frozenset[str] = DEFAULT_CAPS) -> frozenset[str]:
    """The default set with each ``(cap_add, cap_drop)`` layer applied in order (cell, then executable).
    Within a layer drops apply first, then adds, as in Docker: ``--cap-drop ALL --cap-add X`` is X."""
    caps = set(base)
    for add, drop in layers:
        caps -= _expand(drop)
        caps |= _expand(add)
    return frozenset(caps)


def mask(caps: Iterable[str]) -> int:
    """The 64-bit capability mask of ``caps`` (bit n = capability number n)."""
    value = 0
    for name in caps:
        value |= 1 << CAPABILITIES[name]
    return value
