"""Console buffers: a VM's serial console, as numbered lines, in its ZooKeeper znode.

Every line carries a sequence number, monotonic per VM. Numbers are assigned when lines are
published, on top of whatever the znode holds (compare-and-set), so they keep counting across
tailer restarts and migrations, whichever node writes. A follower prints exactly the lines it
has not seen, and says how many it missed when it fell more than the buffer behind.

The znode (JSON):
    lines       the last `limit_lines` lines (fewer if the byte limit cut them)
    first_seq   sequence number of lines[0]; last_seq of lines[-1]
    limit_lines N, the configured buffer length
    size_limited true when old lines were dropped to stay under the byte limit
    cursors     {node: {inode, offset}}: where each node's tailer is in its log file

Lines a guest printed faster than they could be published are not published; one line
"[… N lines dropped …]" stands in their place, so a reader sees that, and where.
"""
from __future__ import annotations

import json
import os
import re
import stat
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, BinaryIO

MAX_LINE_BYTES = 4096            # longer lines are split into pieces this long
MAX_ZNODE_BYTES = 512 * 1024     # the most a buffer may ever be (ZooKeeper's limit is 1 MiB)
READ_CHUNK = 1024 * 1024
HEAD_BYTES = 64
# Terminal control sequences and control characters: a guest must not drive the operator's
# terminal.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()#][0-9A-Za-z]|\x1b[@-_]|"
                      r"[\x00-\x08\x0b-\x1f\x7f]")


def clean(raw: bytes) -> str:
    text = raw.rstrip(b"\r").decode("utf-8", errors="replace")
    return _CONTROL.sub("", text)


class LineSplitter:
    """Bytes in, complete lines out. A partial last line waits for its newline (but never
    grows past MAX_LINE_BYTES)."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[str]:
        *complete, self._partial = (self._partial + data).split(b"\n")
        out = []
        for raw in complete:
            out.extend(_pieces(raw))
        while len(self._partial) > MAX_LINE_BYTES:
            out.append(clean(self._partial[:MAX_LINE_BYTES]))
            self._partial = self._partial[MAX_LINE_BYTES:]
        return out

    def reset(self) -> None:
        self._partial = b""


def _pieces(raw: bytes) -> list[str]:
    if len(raw) <= MAX_LINE_BYTES:
        return [clean(raw)]
    return [clean(raw[i:i + MAX_LINE_BYTES]) for i in range(0, len(raw), MAX_LINE_BYTES)]


class FileCursor:
    """Follows one log file like `tail -F`: survives the file not existing yet, truncation
    (a VM restarted with append='off') and replacement (rotation: the old file is read to its
    end before the new one is opened).

    The tailer runs as root and publishes what it reads: it opens only a regular file owned by
    root (virtlogd) or by itself, never through a symbolic link (O_NOFOLLOW), so a guest's log
    path pointed at /etc/shadow publishes nothing."""

    def __init__(self, path: str, inode: int | None = None, offset: int = 0) -> None:
        self.path = path
        self.inode = inode       # the file this cursor is in, and how far it read it
        self.offset = offset
        self._file: BinaryIO | None = None
        self._head = b""         # the file's first bytes, to recognise it after a truncation
        self.events: list[str] = []
        self.refused = ""        # why the file at path is not read, while it is not

    def read(self) -> bytes:
        """Everything new since the last read ("" if nothing)."""
        chunks = []
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return b""
        refusal = _refusal(st)
        if refusal:
            if self._file is not None:
                chunks.append(self._drain())    # what the real file still had
                self._close()
            self._refuse(refusal)
            return b"".join(chunks)
        self.refused = ""
        if self._file is not None and self.inode != st.st_ino:
            chunks.append(self._drain())            # rotated: finish the old file first
            self._close()
            self.events.append("rotated")
            self.inode, self.offset = None, 0
        if self._file is None:
            self._open(st)
        if st.st_size < self.offset or not self._same_start():
            self.events.append("truncated")
            self.offset = 0
        chunks.append(self._drain())
        return b"".join(chunks)

    def _same_start(self) -> bool:
        """A file truncated and written past the old length before this cursor looked shows
        itself by a different beginning."""
        assert self._file is not None
        if not self._head or self.offset == 0:
            return True
        self._file.seek(0)
        return self._file.read(len(self._head)) == self._head

    def _open(self, st: os.stat_result) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        refusal = _refusal(os.fstat(fd))     # what was opened, not what was looked at
        if refusal:
            os.close(fd)
            raise PermissionError(refusal)
        self._file = os.fdopen(fd, "rb")
        if self.inode != st.st_ino:     # a file this cursor never read: from its start
            self.inode, self.offset = st.st_ino, 0
        self._head = self._file.read(min(self.offset, HEAD_BYTES))

    def _drain(self) -> bytes:
        assert self._file is not None
        self._file.seek(self.offset)
        data = []
        while True:
            chunk = self._file.read(READ_CHUNK)
            if not chunk:
                break
            data.append(chunk)
        out = b"".join(data)
        if self.offset < HEAD_BYTES:
            self._head = (self._head[:self.offset] + out)[:HEAD_BYTES]
        self.offset += len(out)
        return out

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _refuse(self, why: str) -> None:
        if why != self.refused:       # said once, not at every change of the file
            self.refused = why
            self.events.append(f"refused: {why}")

    def close(self) -> None:
        self._close()


TRUSTED_OWNERS = frozenset({0, os.geteuid()})   # virtlogd (root), or this tailer


def _refusal(st: os.stat_result) -> str:
    """Why a console log must not be read ("" if it may)."""
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if st.st_uid not in TRUSTED_OWNERS:
        return f"it is owned by uid {st.st_uid}, not by root"
    return ""


@dataclass
class Pending:
    """Lines read but not yet published: at most `limit` lines and `max_bytes` bytes (older
    ones are only counted, and published as one "[… N lines dropped …]" line)."""
    limit: int
    max_bytes: int = MAX_ZNODE_BYTES
    lines: deque[str] = field(default_factory=deque)
    skipped: int = 0
    size: int = 0

    def add(self, lines: list[str]) -> None:
        for line in lines:
            self.lines.append(line)
            self.size += len(line) + 1
            while self.lines and (len(self.lines) > self.limit or self.size > self.max_bytes):
                self.size -= len(self.lines.popleft()) + 1
                self.skipped += 1

    def __bool__(self) -> bool:
        return bool(self.lines) or self.skipped > 0

    def take(self) -> tuple[list[str], int]:
        lines, skipped = list(self.lines), self.skipped
        self.lines.clear()
        self.skipped = self.size = 0
        return lines, skipped

    def put_back(self, lines: list[str], skipped: int) -> None:
        """A failed write: the taken lines go before anything read since."""
        newer = list(self.lines)
        self.lines.clear()
        self.size = 0
        self.skipped += skipped
        self.add(lines)
        self.add(newer)


def dropped_marker(count: int) -> str:
    return f"[… {count} lines dropped …]"


def empty_buffer(limit: int) -> dict[str, Any]:
    return {"lines": [], "first_seq": 1, "last_seq": 0, "limit_lines": limit,
            "size_limited": False, "cursors": {}}


def merge(stored: dict[str, Any] | None, new: list[str], skipped: int, limit: int,
          node: str = "", cursor: dict[str, Any] | None = None,
          max_bytes: int = MAX_ZNODE_BYTES) -> dict[str, Any]:
    """The buffer after publishing `new` lines, preceded by the marker of `skipped` lines
    that were dropped before they could be published; at most `limit` lines and `max_bytes`
    bytes of JSON."""
    buf = dict(stored) if stored else empty_buffer(limit)
    if skipped and limit > 1 and len(new) >= limit:
        skipped, new = skipped + len(new) - limit + 1, new[-(limit - 1):]   # keep the marker
    if skipped:
        new = [dropped_marker(skipped)] + new
    last = int(buf["last_seq"]) + len(new)
    lines = (list(buf["lines"]) + new)[-limit:] if limit > 0 else []
    buf.update(lines=lines, last_seq=last, first_seq=last - len(lines) + 1, limit_lines=limit,
               size_limited=False, updated=round(time.time(), 3))
    if node:
        buf["node"] = node
        buf["cursors"] = {**buf.get("cursors", {}), node: cursor or {}}
    return _fit(buf, min(max_bytes, MAX_ZNODE_BYTES))


def _fit(buf: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """Drop the oldest lines until the JSON fits max_bytes."""
    size = len(json.dumps(buf, separators=(",", ":")))
    while size > max_bytes and buf["lines"]:
        drop = max(1, len(buf["lines"]) // 10)
        dropped = buf["lines"][:drop]
        buf["lines"] = buf["lines"][drop:]
        buf["first_seq"] += drop
        buf["size_limited"] = True
        size -= len(json.dumps(dropped, separators=(",", ":")))
    return buf


def numbered(buf: dict[str, Any]) -> list[tuple[int, str]]:
    first = int(buf.get("first_seq", 1))
    return [(first + i, line) for i, line in enumerate(buf.get("lines", []))]


def new_since(buf: dict[str, Any] | None, last_seen: int) -> tuple[int, list[tuple[int, str]]]:
    """(lines missed, new numbered lines) for a follower that printed up to last_seen."""
    if not buf or int(buf.get("last_seq", 0)) <= last_seen:
        return 0, []
    first = int(buf.get("first_seq", 1))
    start = last_seen + 1
    missed = max(0, first - start)
    return missed, [(s, line) for s, line in numbered(buf) if s >= start]


def last_lines(buf: dict[str, Any] | None, count: int | None) -> list[tuple[int, str]]:
    lines = numbered(buf or {})
    return lines if count is None else lines[-count:] if count > 0 else []
