from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pvc.console import buffer
from pvc.console.buffer import FileCursor, LineSplitter, Pending, merge, new_since


def test_splitter_holds_partial_lines_until_their_newline() -> None:
    s = LineSplitter()
    assert s.feed(b"boot") == []
    assert s.feed(b"ing\nready\nhal") == ["booting", "ready"]
    assert s.feed(b"f\n") == ["half"]


def test_splitter_replaces_bad_bytes_and_strips_terminal_control() -> None:
    s = LineSplitter()
    assert s.feed(b"caf\xc3\xa9 \xff\xfe ok\r\n") == ["café \ufffd\ufffd ok"]
    assert s.feed(b"\x1b[2J\x1b[?7lSeaBIOS\x07\n") == ["SeaBIOS"]


def test_overlong_lines_are_split_not_lost() -> None:
    s = LineSplitter()
    long = b"x" * (buffer.MAX_LINE_BYTES * 2 + 10)
    out = s.feed(long + b"\n")
    assert [len(p) for p in out] == [buffer.MAX_LINE_BYTES, buffer.MAX_LINE_BYTES, 10]
    # a partial line never grows past the limit either
    assert len(s.feed(b"y" * (buffer.MAX_LINE_BYTES + 5))) == 1


def test_merge_numbers_lines_and_keeps_the_last_n() -> None:
    buf = merge(None, ["a", "b", "c"], 0, limit=5)
    assert (buf["first_seq"], buf["last_seq"], buf["lines"]) == (1, 3, ["a", "b", "c"])
    buf = merge(buf, ["d", "d", "d"], 0, limit=5)       # repeated lines are distinct lines
    assert (buf["first_seq"], buf["last_seq"]) == (2, 6)
    assert buffer.numbered(buf) == [(2, "b"), (3, "c"), (4, "d"), (5, "d"), (6, "d")]


def test_burst_beyond_the_buffer_is_marked_where_lines_were_dropped() -> None:
    pending = Pending(limit=100)
    pending.add([f"line {i}" for i in range(10_000)])
    lines, skipped = pending.take()
    assert (len(lines), skipped, lines[0]) == (100, 9_900, "line 9900")
    buf = merge(merge(None, ["old"], 0, 100), lines, skipped, limit=100)
    # the marker stays visible: it takes the place of one more line
    assert buf["lines"][0] == "[… 9901 lines dropped …]"
    assert buf["lines"][1:] == [f"line {i}" for i in range(9_901, 10_000)]
    assert (buf["first_seq"], buf["last_seq"]) == (2, 101)
    roomy = merge(merge(None, ["old"], 0, 200), lines, skipped, limit=200)
    assert roomy["lines"][:2] == ["old", "[… 9900 lines dropped …]"]
    assert new_since(roomy, 1)[1][0] == (2, "[… 9900 lines dropped …]")


def test_pending_is_bounded_in_bytes_as_well_as_lines() -> None:
    pending = Pending(limit=1000, max_bytes=10_000)
    pending.add(["x" * 999] * 50)                        # 50 kB from a chatty guest
    lines, skipped = pending.take()
    assert sum(len(line) + 1 for line in lines) <= 10_000
    assert skipped == 50 - len(lines) and len(lines) == 10


def test_buffer_stays_under_its_byte_limit() -> None:
    buf = merge(None, ["y" * 1000] * 500, 0, limit=1000, max_bytes=64 * 1024)
    assert len(json.dumps(buf, separators=(",", ":"))) <= 64 * 1024
    assert buf["size_limited"] and buf["last_seq"] == 500


def test_follower_gets_exactly_the_unseen_lines() -> None:
    buf = merge(None, ["x"] * 3, 0, limit=10)
    assert new_since(buf, 3) == (0, [])
    buf = merge(buf, ["x", "y"], 0, limit=10)
    assert new_since(buf, 3) == (0, [(4, "x"), (5, "y")])


def test_buffer_stays_under_the_znode_size_limit() -> None:
    big = ["z" * 4000] * 1000                       # 4 MB of console
    buf = merge(None, big, 0, limit=1000)
    assert buf["size_limited"] and buf["last_seq"] == 1000
    assert len(json.dumps(buf)) <= buffer.MAX_ZNODE_BYTES
    assert buf["first_seq"] == 1000 - len(buf["lines"]) + 1


def test_put_back_keeps_order_after_a_failed_write() -> None:
    p = Pending(limit=10)
    p.add(["a", "b"])
    taken = p.take()
    p.add(["c"])
    p.put_back(*taken)
    assert p.take() == (["a", "b", "c"], 0)


def test_cursor_follows_creation_truncation_and_rotation(tmp_path: Path) -> None:
    path = tmp_path / "vm.log"
    cur = FileCursor(str(path))
    assert cur.read() == b""                          # not there yet
    path.write_bytes(b"one\ntwo\n")
    assert cur.read() == b"one\ntwo\n"
    path.write_bytes(b"new\n")                        # truncated (append='off' restart)
    assert cur.read() == b"new\n" and cur.events == ["truncated"]
    cur.events.clear()
    with open(path, "ab") as f:
        f.write(b"last words\n")                      # written just before rotation
    os.rename(path, tmp_path / "vm.log.0")
    path.write_bytes(b"fresh\n")
    assert cur.read() == b"last words\nfresh\n" and cur.events == ["rotated"]


def test_cursor_resumes_at_its_offset(tmp_path: Path) -> None:
    path = tmp_path / "vm.log"
    path.write_bytes(b"a\nb\nc\n")
    first = FileCursor(str(path))
    first.read()
    resumed = FileCursor(str(path), first.inode, first.offset)
    with open(path, "ab") as f:
        f.write(b"d\n")
    assert resumed.read() == b"d\n"
    assert resumed.read() == b""


def test_cursor_never_follows_a_link_or_reads_a_special_file(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$hash:19000::::::\n")
    log = tmp_path / "vm.log"
    log.symlink_to(secret)
    cur = FileCursor(str(log))
    assert cur.read() == b""
    assert cur.events == ["refused: it is a symbolic link"]
    assert cur.read() == b"" and len(cur.events) == 1            # said once
    log.unlink()
    os.mkfifo(log)
    assert cur.read() == b"" and cur.events[-1] == "refused: it is not a regular file"
    log.unlink()
    log.write_bytes(b"real line\n")
    assert cur.read() == b"real line\n"                          # a real file again


def test_cursor_refuses_a_link_swapped_in_after_it_looked(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """The check is made on what was opened (O_NOFOLLOW), not only on what was looked at."""
    secret = tmp_path / "shadow"
    secret.write_text("secret\n")
    log = tmp_path / "vm.log"
    log.write_text("")
    real_lstat = os.lstat

    def swap_after_lstat(path: str, *a: object, **kw: object) -> os.stat_result:
        st = real_lstat(path)
        if path == str(log) and log.is_file() and not log.is_symlink():
            log.unlink()
            log.symlink_to(secret)
        return st

    monkeypatch.setattr(os, "lstat", swap_after_lstat)
    cur = FileCursor(str(log))
    with pytest.raises(OSError):
        cur.read()
