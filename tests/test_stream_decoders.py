"""A streamed body cut into chunks, lines and server-sent events, however the network cut it.

The decoders take pieces whose boundaries are the network's; hypothesis cuts
the same body at every kind of point and the result must not change.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microcall._lines import LineSplitter, LineTooLong, Rechunker
from microcall._sse import EventDecoder, ServerSentEvent


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at ``points`` (any order, duplicates and out-of-range points allowed)."""
    edges = sorted({min(max(point, 0), len(data)) for point in points} | {0, len(data)})
    return [data[start:end] for start, end in itertools.pairwise(edges)]


def lines_of(pieces: list[bytes], encoding: str = "utf-8") -> list[str]:
    splitter = LineSplitter(encoding)
    lines = [line for piece in pieces for line in splitter.feed(piece)]
    return lines + splitter.flush()


def events_of(pieces: list[bytes]) -> list[ServerSentEvent]:
    decoder = EventDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + decoder.flush()


# ---------------------------------------------------------------- chunks


@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000)), st.integers(1, 300))
def test_rechunking_gives_equal_chunks_and_loses_nothing(
    data: bytes, points: list[int], size: int
) -> None:
    chunker = Rechunker(size)
    chunks = [chunk for piece in cut(data, points) for chunk in chunker.feed(piece)]
    rest = chunker.flush()
    assert all(len(chunk) == size for chunk in chunks)
    assert len(rest) < size
    assert b"".join(chunks) + rest == data


# ---------------------------------------------------------------- lines


def test_every_line_break_counts_once() -> None:
    assert lines_of([b"a\nb\r\nc\rd"]) == ["a", "b", "c", "d"]
    assert lines_of([b"a\r", b"\nb"]) == ["a", "b"]  # CRLF across two pieces
    assert lines_of([b"a\r", b"b"]) == ["a", "b"]  # a lone CR
    assert lines_of([b"a\n\n"]) == ["a", ""]
    assert lines_of([b"form\x0cfeed\n"]) == ["form\x0cfeed"]  # only CR and LF break lines


def test_text_is_decoded_across_pieces_and_bad_bytes_replaced() -> None:
    text = "ünïcödé\n".encode()
    assert lines_of([text[:2], text[2:]]) == ["ünïcödé"]
    assert lines_of([b"\xff\n"]) == ["\ufffd"]
    assert lines_of(["é\n".encode("latin-1")], "latin-1") == ["é"]
    assert lines_of([b"x\n"], "no-such-charset") == ["x"]


@given(
    st.lists(
        st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=20),
        max_size=8,
    ),
    # One kind of break per body: an empty line after a lone CR, ended by
    # LF, would be a CRLF (the same bytes, one break).
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.lists(st.integers(0, 400)),
)
def test_lines_do_not_depend_on_where_the_body_was_cut(
    lines: list[str], end: str, points: list[int]
) -> None:
    body = "".join(line + end for line in lines).encode()
    assert lines_of(cut(body, points)) == lines


# ---------------------------------------------------------------- server-sent events


def test_the_whatwg_rules() -> None:
    body = (
        b"\xef\xbb\xbf: a comment\n"  # a BOM, then a comment
        b"data: one\ndata:two\n\n"  # a space after the colon is dropped, once
        b"event: named\ndata\n\n"  # a field without a colon has an empty value
        b"id: 7\ndata: three\n\n"
        b"data: four\n\n"  # the id persists
        b"id: 8\x00\nretry: 25\nretry: x1\n\n"  # an id with NUL is ignored; no data, no event
        b"unknown: field\ndata:  five\n\n"
        b"data: never dispatched\n"  # the stream ends before its blank line
    )
    assert events_of([body]) == [
        ServerSentEvent(data="one\ntwo"),
        ServerSentEvent(event="named", data=""),
        ServerSentEvent(data="three", id="7"),
        ServerSentEvent(data="four", id="7"),
        ServerSentEvent(data=" five", id="7", retry=25),
    ]


@given(st.lists(st.integers(0, 300)), st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_events_do_not_depend_on_where_the_body_was_cut(points: list[int], end: bytes) -> None:
    body = end.join([b"event: a", b"data: x", b"data: y", b"id: 1", b"", b"data: {}", b"", b""])
    expected = [
        ServerSentEvent(event="a", data="x\ny", id="1"),
        ServerSentEvent(data="{}", id="1"),
    ]
    assert events_of(cut(body, points)) == expected


# ---------------------------------------------------------------- caps


def test_a_line_past_the_limit_without_its_break_is_refused() -> None:
    splitter = LineSplitter(limit=10)
    assert splitter.feed(b"short\nand") == ["short"]
    assert splitter.feed(b" more") == []  # 8 characters held
    with pytest.raises(LineTooLong) as refused:
        splitter.feed(b" and more")
    assert refused.value.limit == 10


def test_lines_under_the_limit_pass_however_many_pieces_they_came_in() -> None:
    body = b"".join(b"%d-" % n * 3 + b"\r\n" for n in range(200))
    pieces = [body[start : start + 3] for start in range(0, len(body), 3)]
    splitter = LineSplitter(limit=20)
    lines = [line for piece in pieces for line in splitter.feed(piece)] + splitter.flush()
    assert lines == [f"{n}-" * 3 for n in range(200)]


def test_a_held_carriage_return_still_ends_its_line_before_a_piece_with_no_break() -> None:
    splitter = LineSplitter(limit=100)
    assert splitter.feed(b"one\r") == []  # may be the start of a CRLF
    assert splitter.feed(b"two") == ["one"]
    assert splitter.flush() == ["two"]


def test_an_event_past_the_limit_is_refused() -> None:
    decoder = EventDecoder(limit=50)
    assert decoder.feed(b"data: short\n\n")[0].data == "short"
    line = b"data: " + b"x" * 10 + b"\n"  # 11 characters of data, never dispatched
    assert decoder.feed(line * 4) == []
    with pytest.raises(LineTooLong):
        decoder.feed(line)
