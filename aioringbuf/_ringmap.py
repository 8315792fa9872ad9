"""The kernel's ring buffer memory for one map fd, mapped as the kernel expects.

Layout (kernel/bpf/ringbuf.c): at mmap offset 0 one read-write page whose
first u64 is ``consumer_pos``; at offset PAGE_SIZE, read-only, a page whose
first u64 is ``producer_pos``, followed by the data area mapped twice.

The checks on such a map live here too (one place, whoever asks: a stream,
the loader, the ELF rewriter): :func:`check_ring_size` and
:func:`ring_map_info`.
"""

from __future__ import annotations

import mmap

from . import _syscall
from ._errors import NotPrivilegedError, RingSizeError, UnsupportedMapError, WrongMapTypeError
from ._fast import check_cpu, full_fence, load_acquire, store_release

PAGE_SIZE = mmap.PAGESIZE
BPF_F_NUMA_NODE = 1 << 2
BPF_F_RB_OVERWRITE = 1 << 19  # newer kernels: a ring that overwrites old records


# A BTF-defined map says max_entries as the length of an int array, and the
# kernel refuses BTF arrays of more than U32_MAX bytes ("Array size overflows
# U32_MAX", kernel/bpf/btf.c): so at most U32_MAX // 4 entries, and the
# largest ring (a power of two) is 512 MiB. max_entries itself is a u32.
MAX_ENTRIES = 0xFFFFFFFF // 4
MAX_RING_SIZE = 1 << (MAX_ENTRIES.bit_length() - 1)


def check_ring_size(size: int, what: str = "ring size") -> None:
    """Raise RingSizeError unless ``size`` is a power of two, page aligned, and
    within the kernel's limit; before anything is rewritten or loaded."""
    page = mmap.PAGESIZE
    if not isinstance(size, int) or isinstance(size, bool):
        raise RingSizeError(f"{what} must be an int, not {type(size).__name__}")
    if size > MAX_RING_SIZE:
        raise RingSizeError(
            f"{what} {size} is too large: the kernel accepts ring buffers of at most "
            f"{MAX_RING_SIZE} bytes ({MAX_RING_SIZE >> 20} MiB) in a BPF object's map "
            "definitions"
        )
    if size <= 0 or size & (size - 1) or size % page:
        hint = 1 << max(size - 1, page - 1).bit_length()
        raise RingSizeError(
            f"{what} {size} is invalid: a ring buffer's size must be a power of two "
            f"and a multiple of the page size ({page}); use e.g. {hint}"
        )


def ring_map_info(map_fd: int) -> _syscall.MapInfo:
    """The map behind ``map_fd``, if it is a ring buffer aioringbuf can consume."""
    info = _syscall.map_info(map_fd)
    if info.type != _syscall.BPF_MAP_TYPE_RINGBUF:
        raise WrongMapTypeError(
            f"map {info.name!r} (fd {map_fd}) is a {info.type_name} map, not a ringbuf; "
            "RingBuffer needs BPF_MAP_TYPE_RINGBUF (use PerfBuffer for perf event arrays)"
        )
    if info.flags & BPF_F_RB_OVERWRITE:
        raise UnsupportedMapError(
            f"ring buffer {info.name!r} was created with BPF_F_RB_OVERWRITE; overwrite "
            "mode rings are not supported yet: create the map without that flag"
        )
    if info.flags & ~BPF_F_NUMA_NODE:
        raise UnsupportedMapError(
            f"ring buffer {info.name!r} has map flags {info.flags:#x} aioringbuf does not know"
        )
    check_ring_size(info.max_entries)
    return info


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
