"""Turn the byte chunks read from a pipe into lines, without ever holding an unbounded line.

A line longer than ``max_line`` is cut into ``max_line``-byte pieces flagged partial, so one
runaway writer (a 10 MB line without a newline, a binary blob) costs bounded memory and still
reaches the log. ``partial`` always means "this piece is not followed by a newline": joining
``piece + (b"" if partial else b"\\n")`` over all pieces gives back the exact input bytes.
"""

from __future__ import annotations


class LineSplitter:
    """Splits one pipe's byte stream into ``(line, partial)`` pieces; keep one per pipe."""

    __slots__ = ("_max", "_pending")

    def __init__(self, max_line: int = 256 * 1024) -> None:
        if max_line < 1:
            raise ValueError("max_line must be >= 1")
        self._max = max_line
        self._pending = b""

    @property
    def pending(self) -> int:
        """Bytes held back waiting for their newline (never more than ``max_line``)."""
        return len(self._pending)

    @property
    def max_line(self) -> int:
        return self._max

    def prefixed(self, chunk: bytes) -> bytes:
        """``chunk`` after the bytes held back (the start of its first line); nothing changes here.

        For a caller that splits the result itself (``LogWriter.append_chunk``) and then hands
        back the unterminated rest with :meth:`hold`.
        """
        return self._pending + chunk if self._pending else bytes(chunk)

    def hold(self, rest: bytes) -> None:
        """Keep ``rest`` (at most ``max_line`` bytes, no newline) as the start of the next line."""
        if len(rest) > self._max:
            raise ValueError("held bytes exceed max_line")
        self._pending = rest

    def feed(self, chunk: bytes) -> list[tuple[bytes, bool]]:
        """The complete lines (and full-size pieces of over-long lines) that ``chunk`` finishes."""
        out = self.split(chunk)
        if out and isinstance(out[0], bytes):
            return [(line, False) for line in out]  # type: ignore[misc]
        return out  # type: ignore[return-value]

    def split(self, chunk: bytes) -> list[bytes] | list[tuple[bytes, bool]]:
        """:meth:`feed`, but whole lines come as plain ``bytes`` when no piece is partial (the usual case).

        A tuple per line is a third of the cost of splitting a flood; ``LogWriter.append_lines``
        takes either form.
        """
        if not chunk:
            return []
        data = self._pending + chunk if self._pending else bytes(chunk)
        parts = data.split(b"\n")
        rest = parts.pop()
        limit = self._max
        if len(rest) <= limit and (not parts or max(map(len, parts)) <= limit):
            self._pending = rest
            return parts
        out: list[tuple[bytes, bool]] = []
        for line in parts:
            if len(line) > limit:
                cut = len(line) - ((len(line) - 1) % limit + 1)
                out.extend((line[i : i + limit], True) for i in range(0, cut, limit))
                out.append((line[cut:], False))
            else:
                out.append((line, False))
        if len(rest) > limit:
            # Emit full pieces; keep 1..limit bytes back: the newline may still follow them.
            keep = (len(rest) - 1) % limit + 1
            head = rest[: len(rest) - keep]
            out.extend((head[i : i + limit], True) for i in range(0, len(head), limit))
            rest = rest[len(rest) - keep :]
        self._pending = rest
        return out

    def flush(self) -> list[tuple[bytes, bool]]:
        """At EOF: the unterminated rest, flagged partial (no newline ended it)."""
        rest, self._pending = self._pending, b""
        return [(rest, True)] if rest else []
