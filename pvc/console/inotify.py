"""A minimal inotify binding (ctypes over libc): the console tailer reacts to file changes
instead of polling. Linux only, which is what pvc nodes run."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
from dataclasses import dataclass

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
DIRECTORY_CHANGES = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO
                     | IN_CREATE | IN_DELETE)
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


@dataclass(frozen=True)
class Event:
    watch: int
    mask: int
    name: str


class Inotify:
    """Watch directories; `read(timeout)` returns the events that arrived."""

    def __init__(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd = fd
        self._watches: dict[str, int] = {}

    def watch_directory(self, path: str) -> None:
        if path in self._watches:
            return
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), DIRECTORY_CHANGES)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        self._watches[path] = wd

    def read(self, timeout: float | None) -> list[Event]:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return []
        events, offset = [], 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            raw = data[offset + _EVENT.size: offset + _EVENT.size + length]
            events.append(Event(wd, mask, raw.rstrip(b"\0").decode(errors="replace")))
            offset += _EVENT.size + length
        return events

    def close(self) -> None:
        os.close(self.fd)
