"""The kernel's ring buffer memory for one map fd, mapped as the kernel expects.

Layout (kernel/bpf/ringbuf.c): at mmap offset 0 one read-write page whose
first u64 is ``consumer_pos``; at offset PAGE_SIZE, read-only, a page whose
first u64 is ``producer_pos``, followed by the data area mapped twice.
"""

from __future__ import annotations

import mmap

from ._errors import NotPrivilegedError

PAGE_SIZE = mmap.PAGESIZE


class RingMemory:
    """The two mappings of one ring buffer and its two position words.

    Memory ordering lives here and only here. The kernel publishes
    ``producer_pos`` with smp_store_release after writing a record header,
    and reads ``consumer_pos`` with smp_load_acquire before reusing space.
    On x86-64 (TSO) loads are not reordered with older loads and stores are
    not reordered with older stores, so an aligned 8-byte plain load is an
    acquire and an aligned 8-byte plain store is a release. memoryview
    item access on a native 'Q' view compiles to exactly one such
    instruction (a fixed 8-byte memcpy). Porting to a weakly ordered CPU
    means replacing these accessors with real atomics (the C extension's
    __atomic builtins), nothing else.
    """

    def __init__(self, fd: int, size: int) -> None:
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
        self._cons = memoryview(self._cons_map).cast("Q")
        self._prod = memoryview(self.data)[:8].cast("Q")

    # -- the TSO accessors -------------------------------------------------

    def consumer_pos(self) -> int:
        return self._cons[0]

    def producer_pos(self) -> int:
        return self._prod[0]  # acquire: plain aligned load on x86-64

    def publish_consumer_pos(self, pos: int) -> None:
        self._cons[0] = pos  # release: plain aligned store on x86-64

    # ----------------------------------------------------------------------

    def close(self) -> None:
        # Views first: an mmap with exported buffers refuses to close.
        for view in (self._cons, self._prod):
            view.release()
        self._cons_map.close()
        self.data.close()
