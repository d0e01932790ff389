"""Keeping a large, long-lived snapshot cheap for the rest of the process.

Owns two things done after a full load: giving the freed heap back to the
operating system, and taking the snapshot out of the garbage collector's
full collections. A full load of a million mailboxes allocates and frees
hundreds of megabytes of temporary objects (COPY text, parsed columns, the
replaced snapshot); glibc keeps freed memory in its heap unless asked to
return it, and CPython's full collections would otherwise keep walking every
long-lived container of the snapshot.

Never needed for correctness: each function is an optimisation that does
nothing where the platform does not offer it.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (musl, macOS, ...: no such call)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library already loaded
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_freed_heap() -> bool:
    """Return free heap pages to the operating system (``malloc_trim(0)``).

    Only memory that is already free is released, so this is safe at any
    time and from any thread; it takes a few milliseconds after a full load.
    Returns whether the platform supports it.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def freeze_long_lived() -> None:
    """Collect once, then move every object alive now, the new snapshot
    above all, out of reach of later collections (``gc.freeze``).

    A full collection examines every tracked container of the process; with
    the snapshot among them it stalled a routing decision for ~30 ms. Frozen
    objects are still freed by reference counting when the snapshot is
    replaced; only cycles among them would wait for the next full load,
    which unfreezes everything first so that such garbage is collected then.
    Runs on the event loop: the collection itself takes a few tens of
    milliseconds, once per full load.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


YOUNG_THRESHOLD = 5000
"""Allocations between young collections (CPython's default: 700)."""


def fewer_young_collections() -> None:
    """Run young collections less often (every ``YOUNG_THRESHOLD`` allocations).

    Serving mail makes many short-lived objects per message (a session, its
    events, a delivery attempt); at the default threshold a busy process spent
    a noticeable share of its time in collections that found nothing, since
    reference counting frees nearly all of them.
    """
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
