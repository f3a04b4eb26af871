"""The Sentinel questions of `cluster status` are asked over RESP2 without redis-py: what
Sentinel answers reads back as it was sent."""
from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvc.core.redis_client import ReplyError, _command, _reply

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
REPLIES = st.recursive(st.none() | st.integers(-2**40, 2**40) | TEXT,
                       lambda inner: st.lists(inner, max_size=5), max_leaves=20)


def encode(value: Any) -> bytes:
    """How a server sends value (bulk strings, integers, arrays, nulls)."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, str):
        data = value.encode()
        return b"$%d\r\n%s\r\n" % (len(data), data)
    return b"*%d\r\n" % len(value) + b"".join(encode(v) for v in value)


@given(REPLIES)
def test_every_reply_reads_back_as_it_was_sent(value: Any) -> None:
    assert _reply(io.BytesIO(encode(value) + b"+OK\r\n")) == value


def test_a_command_is_an_array_of_bulk_strings() -> None:
    assert _command(["SENTINEL", "replicas", "pvc"]) == \
        b"*3\r\n$8\r\nSENTINEL\r\n$8\r\nreplicas\r\n$3\r\npvc\r\n"


def test_an_error_reply_and_a_cut_reply_are_errors() -> None:
    with pytest.raises(ReplyError, match="WRONGPASS"):
        _reply(io.BytesIO(b"-WRONGPASS invalid password\r\n"))
    with pytest.raises(ConnectionError):
        _reply(io.BytesIO(b"*2\r\n$3\r\nabc\r\n"))
    with pytest.raises(ConnectionError):
        _reply(io.BytesIO(b"$5\r\nab"))
