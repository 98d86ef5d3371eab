"""Interpreter settings for a long-running fleet process with thousands of streams.

CPython's cyclic garbage collector runs a young-generation pass every 700 net container
allocations, and a full pass, walking every tracked object, once enough of them have
survived into the old generation. A fleet serving 10,000 agent streams holds millions of
tracked objects (each stream's coroutines, frames, futures, gRPC call state) and allocates
hundreds of thousands more per second on the ingest path, nearly all freed again by
reference counting. With the default thresholds the collector took about a fifth of the
fleet's CPU at 6,000 agents (perf: gc_collect_main and its visitors), for garbage that is
almost never cyclic.
"""

from __future__ import annotations

import gc

# Young collections every 50,000 net allocations instead of 700: the per-message objects
# of a batch (frames, tuples, futures) die by refcount before a pass ever sees them, so
# far fewer survive into older generations, and full passes become rare. Memory held by
# cyclic garbage between passes stays bounded (tens of MB at worst).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Apply `GC_THRESHOLDS` and move everything alive now (imported modules, the schema,
    the servers' setup) into the permanent generation that no collection walks again.

    Call once, after startup: objects created later are collected as usual.
    """
    gc.collect()  # free startup garbage first: frozen objects are never collected
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
