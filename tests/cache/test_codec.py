"""The stored form of an entry: round trips, and anything else read back is UnreadableEntry."""

from __future__ import annotations

import contextlib
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microcall import ConfigurationError
from microcall.cache import Entry, EntryCodec, UnreadableEntry
from microcall.cache._codec import DIGEST_SIZE, MAGIC, storable


def entry(**changes: object) -> Entry:
    fields: dict[str, object] = {
        "method": "GET",
        "url": "http://svc:8080/books?page=2",
        "status": 200,
        "reason": "OK",
        "headers": (
            ("Content-Type", "application/json"),
            ("ETag", '"v1"'),
            ("X-Bytes", "caf\udce9"),  # a non-UTF-8 byte, as aiohttp keeps it
            ("X-Many", "1"),
            ("X-Many", "2"),
        ),
        "body": b'{"title": "Dune"}',
        "final_url": "",
        "born": 1_700_000_000.25,
        "fresh_until": 1_700_000_060.25,
        "stale_if_error": 300.0,
        "must_revalidate": False,
        "vary": (("accept", "application/json"), ("accept-language", None)),
        "nonce": "abc123",
    }
    fields.update(changes)
    return Entry(**fields)  # type: ignore[arg-type]


def test_round_trip() -> None:
    codec = EntryCodec()
    original = entry()
    assert codec.decode(codec.encode(original)) == original


def test_round_trip_of_an_empty_body_and_no_vary() -> None:
    codec = EntryCodec()
    original = entry(body=b"", vary=(), nonce="", must_revalidate=True, final_url="http://x/y")
    assert codec.decode(codec.encode(original)) == original


def test_a_signed_entry_reads_only_with_the_same_key() -> None:
    data = EntryCodec(b"k" * 32).encode(entry())
    assert EntryCodec(b"k" * 32).decode(data) == entry()
    with pytest.raises(UnreadableEntry):
        EntryCodec(b"other key").decode(data)
    with pytest.raises(UnreadableEntry):
        EntryCodec().decode(data)


def test_a_signing_key_must_be_bytes_of_a_sane_length() -> None:
    with pytest.raises(ConfigurationError):
        EntryCodec(b"")
    with pytest.raises(ConfigurationError):
        EntryCodec(b"x" * 65)
    with pytest.raises(ConfigurationError):
        EntryCodec("text")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        pickle.dumps({"status": 200}),
        b'{"status": 200, "body": "aGk="}',
        MAGIC,
        MAGIC + b"\x00" * 200,
    ],
)
def test_foreign_bytes_are_unreadable(data: bytes) -> None:
    with pytest.raises(UnreadableEntry):
        EntryCodec().decode(data)


def test_truncated_and_extended_entries_are_unreadable() -> None:
    data = EntryCodec().encode(entry())
    for cut in (1, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(UnreadableEntry):
            EntryCodec().decode(data[:cut])
    with pytest.raises(UnreadableEntry):
        EntryCodec().decode(data + b"x")


def test_every_flipped_byte_is_caught() -> None:
    data = bytearray(EntryCodec().encode(entry()))
    for index in range(len(data)):
        damaged = bytearray(data)
        damaged[index] ^= 0x01
        with pytest.raises(UnreadableEntry):
            EntryCodec().decode(bytes(damaged))


def test_a_well_digested_but_malformed_payload_is_unreadable() -> None:
    # Someone who knows the format (and there is no key) writes lengths that
    # run past the end, or values out of range: still only UnreadableEntry.
    import hashlib

    def forged(payload: bytes) -> bytes:
        return MAGIC + hashlib.blake2b(payload, digest_size=DIGEST_SIZE).digest() + payload

    good = EntryCodec().encode(entry())[len(MAGIC) + DIGEST_SIZE :]
    for payload in (
        good[:30] + b"\xff\xff\xff\xff" + good[34:],  # a huge string length
        b"\x00\x01" + good[2:],  # status 1
        good[:26] + b"\x07" + good[27:],  # must_revalidate neither 0 nor 1
        good[:28] + b"\xff\xff" + good[30:],  # 65535 headers
    ):
        with pytest.raises(UnreadableEntry):
            EntryCodec().decode(forged(payload))


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_no_bytes_raise_anything_but_unreadable_entry(data: bytes) -> None:
    with contextlib.suppress(UnreadableEntry):
        EntryCodec().decode(MAGIC + data)


@settings(max_examples=100)
@given(
    body=st.binary(max_size=200),
    headers=st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True),
            st.text(
                alphabet=st.characters(
                    blacklist_categories=("Cs",), blacklist_characters="\x00\r\n"
                ),
                max_size=40,
            ),
        ),
        max_size=10,
    ),
    status=st.integers(200, 599),
)
def test_any_entry_round_trips(body: bytes, headers: list[tuple[str, str]], status: int) -> None:
    original = entry(body=body, headers=tuple(headers), status=status)
    assert EntryCodec().decode(EntryCodec().encode(original)) == original


@pytest.mark.parametrize("text", ["a\x00b", "a\rb", "a\nb", "\ud800"])
def test_text_that_cannot_be_stored(text: str) -> None:
    assert not storable(text)


def test_escaped_bytes_from_aiohttp_can_be_stored() -> None:
    assert storable("caf\udce9")
    assert storable("plain value; q=0.5")
