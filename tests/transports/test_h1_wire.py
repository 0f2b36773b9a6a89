"""The sans-I/O response reader of the HTTP/1.1 transport, fed bytes cut at every point."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microcall.transports._h1_wire import (
    MAX_HEAD,
    ResponseReader,
    TooLarge,
    WireError,
    request_head,
)


def feed_in_pieces(reader: ResponseReader, data: bytes, cuts: list[int]) -> None:
    at = 0
    for cut in sorted(set(cuts)):
        reader.feed(data[at:cut])
        at = cut
    reader.feed(data[at:])


def chunked(pieces: list[bytes], extension: bool) -> bytes:
    out = b""
    for piece in pieces:
        if piece:
            size = f"{len(piece):x}".encode() + (b";name=value" if extension else b"")
            out += size + b"\r\n" + piece + b"\r\n"
    return out + b"0\r\n\r\n"


@given(
    pieces=st.lists(st.binary(max_size=40), max_size=8),
    extension=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=10),
)
def test_a_chunked_body_is_whole_however_it_arrives(
    pieces: list[bytes], extension: bool, cuts: list[int]
) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    reader = ResponseReader(head_only=False, cap=None)
    feed_in_pieces(reader, head + chunked(pieces, extension), cuts)
    assert reader.complete
    assert reader.reusable
    assert reader.body() == b"".join(pieces)


@given(
    body=st.binary(max_size=200),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=10),
)
def test_a_body_of_declared_length_is_whole_however_it_arrives(
    body: bytes, cuts: list[int]
) -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    reader = ResponseReader(head_only=False, cap=None)
    feed_in_pieces(reader, data, cuts)
    assert reader.complete
    assert reader.reusable
    assert reader.body() == body


@given(cut=st.integers(min_value=1, max_value=60))
def test_a_message_cut_short_is_never_complete(cut: int) -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"
    reader = ResponseReader(head_only=False, cap=None)
    reader.feed(data[: len(data) - cut])
    assert not reader.complete
    assert not reader.eof()


@given(chunk=st.binary(min_size=1, max_size=10).filter(lambda b: not b.isalnum()))
def test_bad_chunk_sizes_are_wire_errors(chunk: bytes) -> None:
    reader = ResponseReader(head_only=False, cap=None)
    with pytest.raises(WireError):
        reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"zz" + chunk)


def test_informational_answers_are_skipped() -> None:
    reader = ResponseReader(head_only=False, cap=None)
    reader.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
    assert not reader.complete
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert reader.complete
    assert reader.status == 200
    assert reader.body() == b"ok"
    assert reader.headers == [("Content-Length", "2")]


@pytest.mark.parametrize(
    ("head_only", "status"), [(True, 200), (False, 204), (False, 304), (True, 404)]
)
def test_answers_without_a_body_end_with_their_head(head_only: bool, status: int) -> None:
    reader = ResponseReader(head_only=head_only, cap=None)
    reader.feed(b"HTTP/1.1 %d X\r\nContent-Length: 50\r\n\r\n" % status)
    assert reader.complete
    assert reader.reusable
    assert reader.body() == b""


def test_a_body_read_to_the_close_ends_at_eof_and_the_connection_with_it() -> None:
    reader = ResponseReader(head_only=False, cap=None)
    reader.feed(b"HTTP/1.0 200 OK\r\n\r\nsome")
    reader.feed(b" more")
    assert not reader.complete
    assert reader.eof()
    assert reader.body() == b"some more"
    assert not reader.reusable


def test_bytes_past_the_message_spoil_the_connection() -> None:
    reader = ResponseReader(head_only=False, cap=None)
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
    assert reader.complete
    assert reader.body() == b"ok"
    assert not reader.reusable


def test_connection_close_is_honoured() -> None:
    reader = ResponseReader(head_only=False, cap=None)
    reader.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    assert reader.complete
    assert not reader.reusable
    reader = ResponseReader(head_only=True, cap=None)
    reader.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n")
    assert reader.complete
    assert not reader.reusable


def test_a_head_past_the_limit_is_a_wire_error() -> None:
    reader = ResponseReader(head_only=False, cap=None)
    reader.feed(b"HTTP/1.1 200 OK\r\nX: ")
    with pytest.raises(WireError, match="longer than"):
        reader.feed(b"h" * MAX_HEAD)


def test_garbage_is_a_wire_error() -> None:
    with pytest.raises(WireError):
        ResponseReader(head_only=False, cap=None).feed(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_a_declared_length_past_the_cap_fails_before_the_body() -> None:
    reader = ResponseReader(head_only=False, cap=10)
    with pytest.raises(TooLarge) as caught:
        reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")
    assert caught.value.declared == 11
    assert caught.value.cap == 10


@given(sizes=st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=6))
def test_a_chunked_body_past_the_cap_fails_as_it_passes(sizes: list[int]) -> None:
    cap = 10
    reader = ResponseReader(head_only=False, cap=cap)
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    data += chunked([b"x" * size for size in sizes], extension=False)
    if sum(sizes) > cap:
        with pytest.raises(TooLarge):
            reader.feed(data)
    else:
        reader.feed(data)
        assert len(reader.body()) == sum(sizes)


def test_the_request_head() -> None:
    head = request_head("POST", "/a?b=1", "svc:8080", {"X-One": "1"}, b"body")
    assert head == (
        b"POST /a?b=1 HTTP/1.1\r\nHost: svc:8080\r\nX-One: 1\r\nContent-Length: 4\r\n\r\n"
    )
    given_host = request_head("GET", "/", "10.0.0.1:80", {"Host": "svc"}, None)
    assert given_host == b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n"
    assert b"Content-Length: 0" in request_head("PUT", "/", "h", {}, None)
    framing = request_head("GET", "/", "h", {"Content-Length": "9", "Transfer-Encoding": "x"}, None)
    assert b"Content-Length" not in framing
    assert b"Transfer-Encoding" not in framing
