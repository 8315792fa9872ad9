"""The kernel's ring buffer memory for one map fd, mapped as the kernel expects.

Layout (kernel/bpf/ringbuf.c): at mmap offset 0 one read-write page whose
first u64 is ``consumer_pos``; at offset PAGE_SIZE, read-only, a page whose
first u64 is ``producer_pos``, followed by the data area mapped twice.
"""

from __future__ import annotations

import mmap

from ._errors import NotPrivilegedError
from ._fast import check_cpu, full_fence, load_acquire, store_release

PAGE_SIZE = mmap.PAGESIZE


class RingMemory:
    """The two mappings of one ring buffer and its two position words.

    The position words are read and written with the ordered accesses of
    ``_fast`` (C atomics, or the x86-64-only pure-Python twins of
    ``_order``), each pairing with a line of kernel/bpf/ringbuf.c:

    * ``producer_pos()`` is a load-acquire, pairing with
      ``smp_store_release(&rb->producer_pos, new_prod_pos)`` in
      ``__bpf_ringbuf_reserve()``: the record headers the walk reads next
      are at least the BUSY headers written before it.
    * ``publish_consumer_pos()`` is a store-release, pairing with
      ``smp_load_acquire(&rb->consumer_pos)`` in ``__bpf_ringbuf_reserve()``:
      the records are read (copied out) before the kernel may reuse space.
    * ``quiet()`` is the store-then-load check before sleeping (see there).

    See docs/architecture.md for the whole argument.
    """

    def __init__(self, fd: int, size: int) -> None:
        check_cpu()
        self.size = size
        self.mask = size - 1
        self.base = PAGE_SIZE  # the data area's offset inside ``data``
        try:
            self._cons_map = mmap.mmap(
                fd, PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0
            )
        except PermissionError:
            raise NotPrivilegedError("mapping the ring buffer's consumer page") from None
        try:
            self.data = mmap.mmap(
                fd, PAGE_SIZE + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=PAGE_SIZE
            )
        except BaseException:
            self._cons_map.close()
            raise

    # -- the ordered accesses ---------------------------------------------

    def consumer_pos(self) -> int:
        return load_acquire(self._cons_map, 0)  # ours: any load would do

    def producer_pos(self) -> int:
        return load_acquire(self.data, 0)

    def publish_consumer_pos(self, pos: int) -> None:
        store_release(self._cons_map, 0, pos)

    def quiet(self) -> bool:
        """Whether the ring is still empty, checked after ``publish_consumer_pos``.

        Call it last before sleeping on the map fd. The full fence orders our
        consumer_pos store before the producer_pos load (store-then-load, the
        one reordering even x86-64 makes). It pairs with bpf_ringbuf_commit(),
        which commits the header with ``xchg(&hdr->len, new_len)`` (a full
        barrier) and then decides whether to wake us with
        ``smp_load_acquire(&rb->consumer_pos)``: either we see its record
        here, or it sees that we have consumed up to it and wakes us. Without
        the fence both could miss, and the record would wait for the next one.
        """
        full_fence()
        return self.producer_pos() == self.consumer_pos()

    # ----------------------------------------------------------------------

    def close(self) -> None:
        self._cons_map.close()
        self.data.close()
