"""What a forked child must do, and must never do, with its parent's event loops.

``os.fork()`` copies a client's loop, selector and pooled sockets into the
child, but not the thread that runs the loop. Two things then go wrong unless
the child is careful:

* The child must never close or finalize those copies. An epoll instance is
  shared across fork: closing the child's copy of a transport unregisters its
  socket (``EPOLL_CTL_DEL``) from the one epoll set both processes use, and
  the parent's loop stops hearing about it, so its next call hangs until its
  deadline. Garbage collection closes them too, and so does the clearing of
  module globals at interpreter exit; so :func:`abandon` keeps them alive with
  a reference nothing releases, the one way to keep CPython from ever
  finalizing an object.
* libuv (under uvloop) joins its thread pool's threads in a destructor at
  process exit. A child inherits the count of those threads but not the
  threads, and its normal exit crashes (SIGSEGV) joining threads that do not
  exist. libuv starts a new pool in the child on the pool's first use, so
  :func:`restart_libuv_pool_if_forked` uses it once, at exit, before that
  destructor runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import sys

# Set when this process, or one it was forked from, ran a uvloop loop.
_uvloop_ran = False
# Set in a forked child.
_forked = False
# Where abandoned objects are kept on interpreters without reference counts to raise.
_abandoned: list[object] = []


def note_uvloop_ran() -> None:
    """Remember that a uvloop loop ran here: a forked child must then restart libuv's pool."""
    global _uvloop_ran
    _uvloop_ran = True


def abandon(*objects: object) -> None:
    """In a forked child: keep ``objects`` alive and unclosed until the process ends.

    They are the parent's (a loop, a client and the sockets under them); see
    the module's docstring for why the child may neither close nor drop them.
    """
    if sys.implementation.name == "cpython":
        for one in objects:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(one))
    else:  # pragma: no cover - only CPython is tested
        _abandoned.extend(objects)


def restart_libuv_pool_if_forked() -> None:
    """In a forked child whose parent ran uvloop: give libuv a pool of its own before exit.

    Asking one numeric ``getnameinfo`` of libuv's pool makes libuv start its
    pool afresh in this process (it resets itself at fork and starts again on
    first use); its exit destructor then joins threads that exist. Numeric
    flags: nothing is looked up, no name server is asked.
    """
    if not (_forked and _uvloop_ran):
        return
    try:
        import uvloop
    except ImportError:  # pragma: no cover - _uvloop_ran implies it imported
        return
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(
            loop.getnameinfo(("127.0.0.1", 0), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
        )
    except (OSError, asyncio.CancelledError):  # pragma: no cover - nothing to resolve
        pass
    finally:
        loop.close()


def _note_fork() -> None:
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_note_fork)
