"""Lock-free single-producer/single-consumer rings of fixed-size numpy records in POSIX shared memory.

A ring is one ``/dev/shm/hean*`` segment (mode 0600): a header (magic, versions, capacity, record size,
the dtype as text, producer/consumer pids, then the WRITE and READ cursors on their own cache lines and
each side's private cached copy of the other's cursor) followed by ``capacity`` slots of one structured
dtype padded to a multiple of 64 bytes. :mod:`hean.rings.layout` documents every word and its memory order.

Python side (create, attach, close, unlink, cold-path push/pop)::

    from hean.rings import create, attach
    from hean.records import MARKET_EVENT

    with create("hean.md.feed-book", MARKET_EVENT, 4096) as ring:   # creator; unlink when done
        ...
    prod = attach("hean.md.feed-book", role="producer")             # dtype read from the header
    cons = attach("hean.md.feed-book", role="consumer")
    prod.push(events)            # array or one record, non-blocking; returns how many went in
    prod.push_wait(events)       # spin while full; PeerDeadError if the consumer's pid dies
    cons.pop()                   # one record copy or None;  cons.pop_all() -> array copy
    len(cons), cons.high_water, cons.stats()

Hot path: pass ``ring.hdr`` (int64 header words) and ``ring.slots`` (structured array) into a compiled
loop (:mod:`hean.jit`: a ``@kernel``, or an ``@entry`` when Python calls it) and use :mod:`hean.rings.spsc`::

    @kernel
    def consume(hdr, slots):
        start, n = available(hdr)
        for j in range(n):
            rec = slots[(start + j) & hdr[MASK]]
            ...
        release(hdr, start + n)          # one release store per batch

:mod:`hean.rings.inspect` lists rings with liveness of their owners (``hean rings``).
"""

from hean.rings.layout import CAPACITY, MASK
from hean.rings.ring import PeerDeadError, Ring, RingError, attach, create, peer_alive
from hean.rings.spsc import (
    available,
    claim_upto,
    count_drop,
    fill,
    prefetch_claim,
    publish,
    push_spin,
    release,
    try_claim,
    try_peek,
    try_pop,
    try_push,
)

__all__ = [
    "CAPACITY",
    "MASK",
    "PeerDeadError",
    "Ring",
    "RingError",
    "attach",
    "available",
    "claim_upto",
    "count_drop",
    "create",
    "fill",
    "peer_alive",
    "prefetch_claim",
    "publish",
    "push_spin",
    "release",
    "try_claim",
    "try_peek",
    "try_pop",
    "try_push",
]
