"""Durable files for file.v1.File, one tree per caller scope, with parigot's handle states.

Layout: ``<state_dir>/files/<scope dir>/<path below /parigot/app>``; scope ``host`` -> ``host/``,
``user:<uid>`` -> ``user/<uid>``, ``cell:a/b`` -> ``cell/a%b`` (``%`` cannot occur in a cell name, so
nested cells never nest trees).
A caller only ever names paths inside its own scope directory, and every filesystem step is relative
to a directory fd opened with ``O_NOFOLLOW`` (openat-style): a symlink anywhere in the tree is refused,
so nothing below the scope directory can lead out of it.

States (in memory, one handle per path): Create -> WRITE, Open -> READ, Close -> CLOSE (no handle).
A restart closes every handle; the bytes written before are on disk (Close fsyncs). A handle opened
on a node-local connection is released when that connection closes or its process exits
(:meth:`FileStore.release_connection`), so a client that died does not hold the path AlreadyInUse.

FileIds are stable: an SQLite index maps IdRaw (type letter ``f``) <-> (scope, path), kept across
Create/Close/Open and dropped by Delete, so the job agent can stage a file by its id
(:meth:`FileStore.locate`).

Every method is synchronous and blocking: the servicer runs them on this store's single worker thread
(:meth:`FileStore.run`, see :mod:`agent.local.sqlite`), which also serialises them, so no locks are needed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from agent.local.files.errors import FileError
from agent.local.files.paths import PREFIX, clean_path, parse_path
from agent.local.parigot import new_id, storable
from agent.local.sqlite import SqliteStore, open_db

MAX_BUF = 2048
MAX_OPEN_PER_SCOPE = 1024
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FileId = tuple[int, int]

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    scope TEXT NOT NULL,
    path TEXT NOT NULL,
    high INTEGER NOT NULL,
    low INTEGER NOT NULL,
    PRIMARY KEY (scope, path),
    UNIQUE (high, low)
);
"""


def scope_dirname(scope: str) -> str:
    """The directory name of a scope (``host``, ``cell:a/b`` -> ``cell/a%b``)."""
    if scope == "host":
        return "host"
    kind, _, name = scope.partition(":")
    if kind == "user":
        if not (name.isascii() and name.isdigit() and len(name) <= 10 and name == str(int(name))):
            raise ValueError(f"bad scope {scope!r}")
        return f"user/{name}"
    if kind != "cell" or not name or "%" in name or name.startswith(".") or "\0" in name:
        raise ValueError(f"bad scope {scope!r}")
    return "cell/" + name.replace("/", "%")


@dataclass
class Handle:
    id: FileId
    state: str  # "WRITE" | "READ"
    fd: int
    scope: str
    path: str  # canonical
    conn: str = ""  # the node-local connection it was opened on ("" : cellard's main listeners)


@dataclass(frozen=True)
class Stat:
    path: str
    is_dir: bool
    size: int
    create_ns: int
    mod_ns: int
    entries: tuple[Stat, ...] = ()


@dataclass(frozen=True)
class FileRef:
    """Where a FileId lives: its scope, canonical path, and the file on the host."""

    id: FileId
    scope: str
    path: str
    host_path: str


@dataclass
class FileStore(SqliteStore):
    root: str  # <state_dir>/files
    _db: sqlite3.Connection | None = None
    _handles: dict[tuple[str, str], Handle] = field(default_factory=dict)
    _by_id: dict[FileId, Handle] = field(default_factory=dict)
    _executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="files"))

    # -- lifecycle (run, db: SqliteStore) ----------------------------------------------------------
    def open(self) -> FileStore:
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self._db = open_db(os.path.join(self.root, "index.db"), SCHEMA)
        return self

    def close(self) -> None:
        super().close()
        for handle in list(self._by_id.values()):
            with contextlib.suppress(OSError):
                os.close(handle.fd)
        self._handles.clear()
        self._by_id.clear()

    # -- the index ----------------------------------------------------------------------------------
    def _id_for(self, scope: str, path: str) -> FileId:
        row = self.db.execute("SELECT high, low FROM files WHERE scope=? AND path=?", (scope, path)).fetchone()
        if row is not None:
            return int(row[0]), int(row[1])
        while True:
            fid = new_id("f")
            try:
                self.db.execute("INSERT INTO files(scope, path, high, low) VALUES (?,?,?,?)", (scope, path, *fid))
                return fid
            except sqlite3.IntegrityError:
                continue  # a 119-bit collision: draw again

    def _known_id(self, scope: str, path: str) -> FileId | None:
        row = self.db.execute("SELECT high, low FROM files WHERE scope=? AND path=?", (scope, path)).fetchone()
        return (int(row[0]), int(row[1])) if row is not None else None

    def locate(self, high: int, low: int) -> FileRef | None:
        """Where file id (high, low) lives (any scope), or None if unknown or gone from disk."""
        if not storable(high, low):
            return None
        row = self.db.execute("SELECT scope, path FROM files WHERE high=? AND low=?", (high, low)).fetchone()
        if row is None:
            return None
        scope, path = str(row[0]), str(row[1])
        host_path = os.path.join(self.root, scope_dirname(scope), *parse_path(path))
        if not os.path.isfile(host_path) or os.path.islink(host_path):
            return None
        return FileRef((high, low), scope, path, host_path)

    def scopes(self) -> list[str]:
        """Scopes that have a tree on disk."""
        out = ["host"] if os.path.isdir(os.path.join(self.root, "host")) else []
        with contextlib.suppress(FileNotFoundError):
            uids = sorted(int(n) for n in os.listdir(os.path.join(self.root, "user")) if n.isdigit())
            out += [f"user:{uid}" for uid in uids]
        with contextlib.suppress(FileNotFoundError):
            out += ["cell:" + n.replace("%", "/") for n in sorted(os.listdir(os.path.join(self.root, "cell")))]
        return out

    def release_connection(self, conn: str) -> int:
        """Close every handle opened on connection ``conn`` (it closed, or its process exited); the
        bytes written so far stay (fsynced), as after an explicit Close. Returns how many."""
        released = [h for h in self._by_id.values() if conn and h.conn == conn]
        for handle in released:
            with contextlib.suppress(OSError, FileError):
                self.close_file(handle.scope, handle.id)
        return len(released)

    # -- safe filesystem walking ------------------------------------------------------------------
    @contextlib.contextmanager
    def _parent(self, scope: str, parts: list[str], create: bool) -> Iterator[int]:
        """A directory fd of ``parts[:-1]`` inside the scope tree (created when ``create``)."""
        top = os.path.join(self.root, scope_dirname(scope))
        if create:
            os.makedirs(top, mode=0o700, exist_ok=True)
        try:
            fd = os.open(top, DIR_FLAGS)
        except FileNotFoundError:
            raise FileError("NotExistError", "no such file or directory") from None
        try:
            for name in parts[:-1]:
                try:
                    nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise FileError("NotExistError", "no such file or directory") from None
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o700, dir_fd=fd)
                    nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:  # ENOTDIR: a file where a directory should be; ELOOP: a symlink
                    code = "CreateError" if create else "NotExistError"
                    raise FileError(code, f"{name}: {exc.strerror}") from None
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    def _parse(self, path: str, need_file: bool = True) -> list[str]:
        parts = parse_path(path)
        if need_file and not parts:
            raise FileError("InvalidPathError", f"path: names the directory {PREFIX}, not a file")
        return parts

    def _take_slot(self, scope: str) -> None:
        if sum(1 for s, _ in self._handles if s == scope) >= MAX_OPEN_PER_SCOPE:
            raise FileError("OpenError", f"at most {MAX_OPEN_PER_SCOPE} open files per caller")

    # -- File RPCs ----------------------------------------------------------------------------------
    def create(self, scope: str, path: str, content: bytes = b"", conn: str = "") -> tuple[str, FileId, bool]:
        """Open ``path`` for writing, truncating an existing closed file; returns (path, id, truncated)."""
        parts = self._parse(path)
        if len(content) > MAX_BUF:
            raise FileError("LargeBufError", f"content: at most {MAX_BUF} bytes, got {len(content)}")
        canon = clean_path(parts)
        if (scope, canon) in self._handles:
            raise FileError("AlreadyInUseError", f"{canon} is open")
        self._take_slot(scope)
        with self._parent(scope, parts, create=True) as dfd:
            flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            truncated = False
            try:
                fd = os.open(parts[-1], flags | os.O_EXCL, 0o600, dir_fd=dfd)
            except FileExistsError:
                truncated = True
                try:
                    fd = os.open(parts[-1], flags | os.O_TRUNC, 0o600, dir_fd=dfd)
                except OSError as exc:  # EISDIR, ELOOP (symlink)
                    raise FileError("CreateError", f"{canon}: {exc.strerror}") from None
        try:
            if content:
                _write_all(fd, content)
            fid = self._id_for(scope, canon)
        except BaseException:
            os.close(fd)
            raise
        handle = Handle(fid, "WRITE", fd, scope, canon, conn)
        self._handles[(scope, canon)] = self._by_id[fid] = handle
        return canon, fid, truncated

    def open_file(self, scope: str, path: str, conn: str = "") -> tuple[str, FileId]:
        """Open a closed file for reading."""
        parts = self._parse(path)
        canon = clean_path(parts)
        if (scope, canon) in self._handles:
            raise FileError("AlreadyInUseError", f"{canon} is open")
        self._take_slot(scope)
        with self._parent(scope, parts, create=False) as dfd:
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            except FileNotFoundError:
                raise FileError("NotExistError", f"{canon}: no such file") from None
            except OSError as exc:
                raise FileError("OpenError", f"{canon}: {exc.strerror}") from None
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise FileError("OpenError", f"{canon}: is a directory")
        try:
            fid = self._id_for(scope, canon)
        except BaseException:
            os.close(fd)
            raise
        handle = Handle(fid, "READ", fd, scope, canon, conn)
        self._handles[(scope, canon)] = self._by_id[fid] = handle
        return canon, fid

    def _handle(self, scope: str, fid: FileId) -> Handle:
        handle = self._by_id.get(fid)
        if handle is not None and handle.scope == scope:
            return handle
        if storable(*fid):
            row = self.db.execute("SELECT 1 FROM files WHERE scope=? AND high=? AND low=?", (scope, *fid)).fetchone()
            if row is not None:
                raise FileError("FileClosedError", "file is closed")
        raise FileError("NotExistError", "no file with that id")

    def read(self, scope: str, fid: FileId, size: int) -> bytes:
        """Up to ``size`` bytes (0 = up to 2048) from a file open for reading; EOFError at the end."""
        if size > MAX_BUF:
            raise FileError("LargeBufError", f"buf: at most {MAX_BUF} bytes, got {size}")
        handle = self._handle(scope, fid)
        if handle.state != "READ":
            raise FileError("ReadError", f"{handle.path} is open for writing")
        try:
            data = os.read(handle.fd, size or MAX_BUF)
        except OSError as exc:
            raise FileError("ReadError", f"{handle.path}: {exc.strerror}") from None
        if not data:
            raise FileError("EOFError", f"{handle.path}: end of file")
        return data

    def write(self, scope: str, fid: FileId, buf: bytes) -> int:
        if len(buf) > MAX_BUF:
            raise FileError("LargeBufError", f"buf: at most {MAX_BUF} bytes, got {len(buf)}")
        handle = self._handle(scope, fid)
        if handle.state != "WRITE":
            raise FileError("WriteError", f"{handle.path} is open for reading")
        try:
            _write_all(handle.fd, buf)
        except OSError as exc:
            raise FileError("WriteError", f"{handle.path}: {exc.strerror}") from None
        return len(buf)

    def close_file(self, scope: str, fid: FileId) -> FileId:
        handle = self._handle(scope, fid)
        del self._handles[(handle.scope, handle.path)]
        del self._by_id[handle.id]
        try:
            if handle.state == "WRITE":
                os.fsync(handle.fd)
        finally:
            os.close(handle.fd)
        return fid

    def delete(self, scope: str, path: str) -> tuple[str, FileId]:
        parts = self._parse(path)
        canon = clean_path(parts)
        if (scope, canon) in self._handles:
            raise FileError("AlreadyInUseError", f"{canon} is open")
        with self._parent(scope, parts, create=False) as dfd:
            try:
                st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                raise FileError("NotExistError", f"{canon}: no such file") from None
            if not stat.S_ISREG(st.st_mode):
                raise FileError("DeleteError", f"{canon}: not a regular file")
            try:
                os.unlink(parts[-1], dir_fd=dfd)
            except OSError as exc:
                raise FileError("DeleteError", f"{canon}: {exc.strerror}") from None
        fid = self._known_id(scope, canon) or (0, 0)
        self.db.execute("DELETE FROM files WHERE scope=? AND path=?", (scope, canon))
        return canon, fid

    def stat(self, scope: str, path: str, entries: bool = True) -> Stat:
        """A file's size and times; a directory aggregates every file under it (and lists its entries)."""
        parts = self._parse(path, need_file=False)
        canon = clean_path(parts)
        top = os.path.join(self.root, scope_dirname(scope))
        if not parts:
            try:
                fd = os.open(top, DIR_FLAGS)
            except FileNotFoundError:
                return Stat(canon, True, 0, 0, 0)  # an empty tree: the root always exists
        else:
            with self._parent(scope, parts, create=False) as dfd:
                try:
                    fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
                except FileNotFoundError:
                    raise FileError("NotExistError", f"{canon}: no such file") from None
                except OSError as exc:
                    raise FileError("NotExistError", f"{canon}: {exc.strerror}") from None
        try:
            return self._stat_fd(fd, canon, entries)
        finally:
            os.close(fd)

    def _stat_fd(self, fd: int, canon: str, entries: bool) -> Stat:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):
            return Stat(canon, False, st.st_size, st.st_ctime_ns, st.st_mtime_ns)
        size, mod, children = 0, st.st_mtime_ns, []
        base = canon.rstrip("/")
        for entry in sorted(os.scandir(fd), key=lambda e: e.name):
            child = f"{base}/{entry.name}"
            try:
                cfd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
            except OSError:
                continue  # a symlink or a vanished entry: not part of the tree
            try:
                sub = self._stat_fd(cfd, child, False)
            finally:
                os.close(cfd)
            size += sub.size
            mod = max(mod, sub.mod_ns)
            if entries:
                children.append(sub)
        return Stat(canon, True, size, st.st_ctime_ns, mod, tuple(children))

    def import_tree(self, scope: str, under: list[str], source: str, max_bytes: int) -> int:
        """Copy the regular files below host directory ``source`` (a done job's work dir) to
        ``/parigot/app/<under...>/`` in ``scope``; returns how many. Never through a symlink (fwalk
        does not follow them, each file is opened O_NOFOLLOW and checked to be the one listed); a
        file with several hard links, a path the file rules refuse, a path open in the store, and
        whatever exceeds ``max_bytes`` in all are skipped."""
        copied = total = 0
        for dirpath, _dirs, names, dfd in os.fwalk(source):
            rel = os.path.relpath(dirpath, source)
            below = [] if rel == "." else rel.split(os.sep)
            for name in sorted(names):
                parts = [*under, *below, name]
                try:
                    canon = clean_path(parse_path(clean_path(parts)))
                    listed = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except (FileError, OSError):
                    continue
                if not stat.S_ISREG(listed.st_mode) or listed.st_nlink != 1 or (scope, canon) in self._handles:
                    continue
                if total + listed.st_size > max_bytes:
                    continue
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
                except OSError:
                    continue
                try:
                    st = os.fstat(fd)
                    if (st.st_dev, st.st_ino) != (listed.st_dev, listed.st_ino):
                        continue  # replaced since it was listed
                    with self._parent(scope, parts, create=True) as pfd:
                        _copy_fd(fd, pfd, name)
                    total += st.st_size
                    copied += 1
                except (OSError, FileError):
                    continue
                finally:
                    os.close(fd)
        return copied

    def open_state(self, scope: str, path: str) -> str:
        """WRITE, READ or CLOSE (for listings)."""
        handle = self._handles.get((scope, path))
        return handle.state if handle is not None else "CLOSE"


def _copy_fd(src: int, dir_fd: int, name: str) -> None:
    """Copy open file ``src`` to ``name`` in directory ``dir_fd``, atomically (temp file + rename)."""
    tmp = f".{name}.import"
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        while chunk := os.read(src, 1 << 20):
            _write_all(out, chunk)
        os.fsync(out)
    finally:
        os.close(out)
    try:
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        os.unlink(tmp, dir_fd=dir_fd)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise FileError("WriteError", "no space left on the node") from None
            raise
        view = view[n:]
