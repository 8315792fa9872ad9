"""The counters a stream reports: one immutable snapshot per stats() call."""

from __future__ import annotations

import msgspec


class StreamStats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one stream's counters.

    Accounting: every record the BPF side tried to write ends up in exactly
    one of ``delivered``, ``kernel_drops`` (every loss the BPF side counted:
    ring full at reserve time, or for exec events the in-flight table full),
    ``queue_drops`` (evicted by the overflow policy, or still queued in a
    drop_* stream when it closed), ``decode_errors`` or ``discarded`` (the
    program called bpf_ringbuf_discard), or is still waiting: in the ring
    (``avail_bytes``) or in the queue (``queue_len``).

    ``unread`` is filled by ``exec_events()`` streams, whose ring dies with
    them: the records the ring accepted that are in no other bucket, still
    in the ring while the stream is open, and left behind by a shutdown
    that could not drain them in time after it closed. Other streams leave
    it None: their undelivered records stay in the ring for its next
    consumer.
    """

    delivered: int
    kernel_drops: int | None  # None: the map has no <name>_drops counter
    queue_drops: int
    decode_errors: int
    discarded: int
    queue_len: int
    queue_peak: int  # the most records ever queued: what maxsize must hold
    maxsize: int
    ring_size: int
    avail_bytes: int
    consumer_pos: int
    producer_pos: int
    unread: int | None = None
