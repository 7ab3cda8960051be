"""parigot's file path rules, applied in parigot's order, plus cellar's byte bounds.

1. none of ``* ? > < | & ; $ \\ ` " '``, no control character, no NUL;
2. starts with exactly ``/parigot/app/``;
3. no ``.`` or ``..`` component;
4. at most 20 parts after cleaning (``//`` and a trailing ``/`` collapse; ``parigot`` and ``app``
   count as parts).
cellar adds: a component is at most 255 bytes and the path at most 4096 bytes (the kernel's limits).
Any failure is ``InvalidPathError``. The result is the list of components below ``/parigot/app``
(empty for ``/parigot/app/`` itself, the root of the caller's tree).
"""

from __future__ import annotations

from agent.local.files.errors import FileError

PREFIX = "/parigot/app/"
FORBIDDEN = frozenset("*?><|&;$\\`\"'")
MAX_PARTS = 20
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096


def parse_path(path: str) -> list[str]:
    """The components of ``path`` below ``/parigot/app``; FileError(InvalidPathError) if it breaks a rule."""
    bad = next((c for c in path if c in FORBIDDEN or ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise FileError("InvalidPathError", f"path: character {bad!r} is not allowed")
    if not path.startswith(PREFIX):
        raise FileError("InvalidPathError", f"path: must start with {PREFIX}")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise FileError("InvalidPathError", "path: '.' and '..' components are not allowed")
    if len(parts) > MAX_PARTS:
        raise FileError("InvalidPathError", f"path: at most {MAX_PARTS} parts, got {len(parts)}")
    if len(path.encode()) > MAX_PATH_BYTES or any(len(p.encode()) > MAX_COMPONENT_BYTES for p in parts):
        raise FileError("InvalidPathError", f"path: at most {MAX_PATH_BYTES} bytes, {MAX_COMPONENT_BYTES} per part")
    return parts[2:]


def clean_path(parts: list[str]) -> str:
    """The canonical spelling of a parsed path."""
    return PREFIX + "/".join(parts)
