"""The bytes an entry is stored as in Redis, memcached or on disk: a checked binary envelope.

A shared store is written by other processes and hosts, and whoever can
write to it can put anything under a key. So nothing read back is trusted:
no pickle (unpickling runs code), and every read is checked against this
format, with lengths bounded by the data actually present. Anything that
does not fit is :class:`UnreadableEntry`, which the cache treats as a miss.

Layout (big-endian)::

    magic     4 bytes   b"mcE\x01" (format version 1)
    digest   16 bytes   BLAKE2b of everything after it; keyed with the
                        signing key when one is set (then a writer without
                        the key cannot forge an entry), plain otherwise
                        (then it only catches truncation and corruption)
    fixed    66 bytes   status u16, born f64, fresh_until f64,
                        stale_if_error f64, must_revalidate u8, flags u8
                        (reserved, 0), header count u16, vary count u16,
                        then the byte length (u32) of each part below
    parts               method, url, reason, final_url, nonce (UTF-8);
                        headers: "name NUL value NUL" per header;
                        vary: "name NUL 0|1 NUL value NUL" per name (1: the
                        request had the header); the body. The lengths must
                        add up to exactly what is there.

All lengths sit in the fixed part, so a read is one unpack, a few slices
and one pattern match over the headers (names must be tokens, values free
of NUL, CR and LF): a hit from a shared store costs microseconds. Text is
UTF-8 with surrogate escapes, so header bytes that are not UTF-8 (which
aiohttp keeps that way) survive the round trip.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import struct

from microcall.cache._entry import Entry
from microcall.errors import ConfigurationError

MAGIC = b"mcE\x01"
DIGEST_SIZE = 16
_FIXED = struct.Struct(">HdddBBHH8I")
_HEAD = len(MAGIC) + DIGEST_SIZE

# Zero or more "token NUL value NUL" pairs.
_HEADERS = re.compile(r"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+\x00[^\x00\r\n]*\x00)*")
_VARY = re.compile(r"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+\x00[01]\x00[^\x00\r\n]*\x00)*")
_METHOD = re.compile(r"[A-Z]{1,16}")
_UNSTORABLE = re.compile("[\x00\r\n\ud800-\udc7f\udd00-\udfff]")

# More headers than this in one stored response is not something a service
# sends; refusing it keeps a forged count from costing anything.
MAX_HEADERS = 1000


class UnreadableEntry(Exception):
    """Stored bytes that are not an entry of this format (corrupt, foreign or forged)."""


class EntryCodec:
    """Encodes entries to bytes and checks bytes back into entries.

    ``signing_key`` (bytes, up to 64) makes the digest a MAC: give every
    client that shares a store the same key, and entries written by anyone
    else are unreadable. Without it the digest still catches damage.
    """

    __slots__ = ("_key",)

    def __init__(self, signing_key: bytes | None = None) -> None:
        if signing_key is not None and not (
            isinstance(signing_key, bytes) and 0 < len(signing_key) <= 64
        ):
            raise ConfigurationError("signing_key must be 1 to 64 bytes")
        self._key = signing_key or b""

    def encode(self, entry: Entry) -> bytes:
        """The stored form of ``entry``; its text must be :func:`storable` (build_entry sees to it)."""
        texts = [
            _utf8(text)
            for text in (entry.method, entry.url, entry.reason, entry.final_url, entry.nonce)
        ]
        headers = _utf8("".join(f"{name}\x00{value}\x00" for name, value in entry.headers))
        vary = _utf8(
            "".join(
                f"{name}\x00{'0' if value is None else '1'}\x00{value or ''}\x00"
                for name, value in entry.vary
            )
        )
        fixed = _FIXED.pack(
            entry.status,
            entry.born,
            entry.fresh_until,
            entry.stale_if_error,
            1 if entry.must_revalidate else 0,
            0,
            len(entry.headers),
            len(entry.vary),
            *(len(text) for text in texts),
            len(headers),
            len(vary),
            len(entry.body),
        )
        payload = b"".join((fixed, *texts, headers, vary, entry.body))
        return MAGIC + self._digest(payload) + payload

    def decode(self, data: bytes | bytearray | memoryview) -> Entry:
        """The entry stored as ``data``; UnreadableEntry if it is anything else."""
        raw = bytes(data)
        if len(raw) < _HEAD + _FIXED.size or raw[: len(MAGIC)] != MAGIC:
            raise UnreadableEntry("not a microcall cache entry")
        payload = memoryview(raw)[_HEAD:]
        if not hmac.compare_digest(raw[len(MAGIC) : _HEAD], self._digest(payload)):
            raise UnreadableEntry("digest does not match (damaged, or not signed with this key)")
        try:
            return _read(raw, _HEAD)
        except (struct.error, UnicodeDecodeError, ValueError, IndexError) as exc:
            raise UnreadableEntry(f"malformed entry: {exc}") from exc

    def _digest(self, payload: bytes | memoryview) -> bytes:
        return hashlib.blake2b(payload, digest_size=DIGEST_SIZE, key=self._key).digest()


def storable(text: str) -> bool:
    """Whether ``text`` can be a stored header name or value.

    NUL, CR and LF separate fields here (and HTTP forbids them in fields);
    surrogates other than the escaped bytes aiohttp makes cannot be encoded.
    """
    return _UNSTORABLE.search(text) is None


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _read(raw: bytes, offset: int) -> Entry:
    values = _FIXED.unpack_from(raw, offset)
    status, born, fresh_until, stale, revalidate, flags, header_count, vary_count = values[:8]
    if not 100 <= status <= 599 or flags != 0 or revalidate not in (0, 1):
        raise ValueError("fixed fields out of range")
    if (
        not (math.isfinite(born) and math.isfinite(fresh_until) and math.isfinite(stale))
        or stale < 0
    ):
        raise ValueError("times out of range")
    if header_count > MAX_HEADERS or vary_count > MAX_HEADERS:
        raise ValueError("too many headers")
    # Where each part starts and ends: cuts[i] to cuts[i + 1].
    cuts = [offset + _FIXED.size]
    for length in values[8:]:
        cuts.append(cuts[-1] + length)
    if cuts[-1] != len(raw):
        raise ValueError("the parts' lengths do not add up to the entry's")
    method = raw[cuts[0] : cuts[1]].decode("ascii")
    if not _METHOD.fullmatch(method) or cuts[2] == cuts[1]:
        raise ValueError("bad method or URL")
    url, reason, final_url, nonce, header_text, vary_text = (
        raw[cuts[index] : cuts[index + 1]].decode("utf-8", "surrogateescape")
        for index in range(1, 7)
    )
    if not _HEADERS.fullmatch(header_text):
        raise ValueError("bad headers")
    fields = header_text.split("\x00")
    if len(fields) != 2 * header_count + 1:
        raise ValueError("header count does not match")
    vary: tuple[tuple[str, str | None], ...] = ()
    if vary_count or vary_text:
        if not _VARY.fullmatch(vary_text):
            raise ValueError("bad Vary names")
        varied = vary_text.split("\x00")
        if len(varied) != 3 * vary_count + 1:
            raise ValueError("Vary count does not match")
        vary = tuple(
            (varied[index], varied[index + 2] if varied[index + 1] == "1" else None)
            for index in range(0, 3 * vary_count, 3)
        )
    return Entry(
        method,
        url,
        status,
        reason,
        tuple(zip(fields[0:-1:2], fields[1:-1:2], strict=True)),
        raw[cuts[7] : cuts[8]],
        final_url,
        born,
        fresh_until,
        stale,
        revalidate == 1,
        vary,
        nonce,
    )
