"""DiskBackend: entries in a directory (diskcache), for one host that restarts."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from microcall._validate import positive_int
from microcall.cache._codec import EntryCodec, UnreadableEntry
from microcall.cache._entry import Entry
from microcall.cache._threaded import Threads
from microcall.errors import ConfigurationError

log = logging.getLogger("microcall.cache")

# Enough room for a warm cache to survive a restart, small on today's disks.
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024

# diskcache is thread-safe; a few threads let reads proceed while one writes.
THREADS = 4

# How long SQLite waits for another process's lock before the call fails
# (and the cache goes without the disk for a while): a cache must not hold
# a call up for long.
LOCK_TIMEOUT = 0.25


class DiskBackend:
    """Entries in files under ``directory`` (diskcache: SQLite plus files for large bodies).

    Entries keep their absolute times, so after a restart they are exactly as
    fresh as they were. Bytes are stored as given (encoded by
    :class:`EntryCodec`); diskcache pickles only values that are not bytes, and
    none are given to it. Calls run on the backend's own threads. Several
    processes on one host may share the directory.

    A store SQLite cannot open (a damaged or foreign ``cache.db``) is set
    aside, renamed ``cache.db.corrupt-<time>``, and the backend starts empty,
    with one warning: a cache is never worth failing a service's start for.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        signing_key: bytes | None = None,
    ) -> None:
        positive_int("max_bytes", max_bytes, what="a byte count")
        try:
            import diskcache  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                "DiskBackend needs diskcache: pip install 'microcall[disk]'"
            ) from exc
        self._codec = EntryCodec(signing_key)
        self._store: Any = _open(diskcache, Path(directory), max_bytes)
        self._threads = Threads("microcall-disk-cache", THREADS)

    async def get(self, key: str) -> Entry | None:
        data = await self._threads.run(self._store.get, key)
        if data is None:
            return None
        if not isinstance(data, bytes):
            raise UnreadableEntry(f"not bytes: {type(data).__name__}")
        return self._codec.decode(data)

    async def set(self, key: str, entry: Entry, ttl: float) -> None:
        await self._threads.run(self._store.set, key, self._codec.encode(entry), expire=ttl)

    async def delete(self, keys: Sequence[str]) -> None:
        await self._threads.run(self._delete_all, list(keys))

    def _delete_all(self, keys: list[str]) -> None:
        for key in keys:
            self._store.delete(key)

    async def aclose(self) -> None:
        self._threads.close()
        self._store.close()  # diskcache reopens its connection on the next use


def _open(diskcache: Any, directory: Path, max_bytes: int) -> Any:
    """diskcache's Cache over ``directory``; a damaged database is renamed and a new one made."""

    def cache() -> Any:
        return diskcache.Cache(
            os.fspath(directory),
            size_limit=max_bytes,
            timeout=LOCK_TIMEOUT,
            disk=_bytes_only(diskcache),
        )

    try:
        return cache()
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError):
            raise  # locked, unwritable, full: not damage, and not ours to move
        database = directory / diskcache.core.DBNAME
        aside = database.with_name(f"{database.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        database.rename(aside)
        for suffix in ("-wal", "-shm"):  # SQLite's companions belong to the damaged file
            companion = database.with_name(database.name + suffix)
            if companion.exists():
                companion.rename(aside.with_name(aside.name + suffix))
        log.warning(
            "disk cache %s could not be opened (%s); set aside as %s, starting empty",
            database,
            exc,
            aside.name,
            extra={"microcall_event": "cache_store_set_aside"},
        )
        return cache()


def _bytes_only(diskcache: Any) -> Any:
    """diskcache's Disk, refusing to unpickle: a row someone else wrote in pickle mode is unreadable."""

    class BytesOnlyDisk(diskcache.Disk):  # type: ignore[misc]
        def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
            if mode == diskcache.core.MODE_PICKLE:
                raise UnreadableEntry("a pickled value: never loaded")
            return super().fetch(mode, filename, value, read)

    return BytesOnlyDisk
