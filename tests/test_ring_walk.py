"""The record walk over a ring laid out in user memory, for header states the
kernel only shows in a race (a BUSY record) and for wrap arithmetic."""

from __future__ import annotations

import struct

from aioringbuf._codec import decoder_for
from aioringbuf._ring import (
    BUSY_BIT,
    DISCARD_BIT,
    HeaderState,
    Stop,
    parse_header,
    record_span,
    walk,
)

SIZE = 64


class FakeRing:
    """A data area of SIZE bytes, mapped twice like the kernel's."""

    def __init__(self) -> None:
        self.buf = bytearray(2 * SIZE)
        self.prod = 0

    def put(self, sample: bytes, flags: int = 0) -> int:
        rec = struct.pack("<II", len(sample) | flags, 0) + sample
        rec += bytes(record_span(len(sample)) - len(rec))
        start = self.prod
        for i, b in enumerate(rec):
            off = (start + i) % SIZE
            self.buf[off] = self.buf[off + SIZE] = b
        self.prod += len(rec)
        return start

    def set_flags(self, pos: int, flags: int) -> None:
        word = struct.unpack_from("<I", self.buf, pos % SIZE)[0]
        for base in (0, SIZE):
            struct.pack_into("<I", self.buf, base + pos % SIZE, word | flags)

    def walk(self, cons: int, budget: int = 100, strict: bool = False):
        events: list = []
        starts: list = []
        res = walk(self.buf, 0, SIZE - 1, cons, self.prod, budget, decoder_for(None),
                   events, starts, strict)
        return events, starts, res


def test_header_states() -> None:
    assert parse_header(5) == (HeaderState.DATA, 5)
    assert parse_header(5 | DISCARD_BIT) == (HeaderState.DISCARDED, 5)
    assert parse_header(5 | BUSY_BIT | DISCARD_BIT) == (HeaderState.BUSY, 5)
    assert [record_span(n) for n in (0, 1, 8, 9)] == [8, 16, 16, 24]


def test_busy_record_stops_the_walk_even_if_later_ones_are_committed() -> None:
    ring = FakeRing()
    ring.put(b"one")
    busy = ring.put(b"two")
    ring.put(b"three")
    ring.set_flags(busy, BUSY_BIT)
    events, _, res = ring.walk(0)
    assert events == [b"one"] and res.stop is Stop.BUSY and res.pos == busy


def test_discard_is_skipped_and_counted() -> None:
    ring = FakeRing()
    ring.put(b"a")
    ring.put(b"b", DISCARD_BIT)
    ring.put(b"c")
    events, starts, res = ring.walk(0)
    assert events == [b"a", b"c"] and res.skipped == 1 and res.pos == ring.prod
    assert res.stop is Stop.EMPTY
    assert starts == [0, 32]


def test_records_wrap_through_the_double_mapping() -> None:
    ring = FakeRing()
    cons = 0
    seen = []
    for i in range(40):  # 24-byte spans in a 64-byte ring: every third one wraps
        ring.put(bytes([i]) * 9)
        events, _, res = ring.walk(cons)
        cons = res.pos
        seen += events
    assert seen == [bytes([i]) * 9 for i in range(40)]


def test_budget_limits_a_walk() -> None:
    ring = FakeRing()
    for i in range(3):
        ring.put(bytes([i]))
    events, _, res = ring.walk(0, budget=2)
    assert events == [b"\0", b"\1"] and res.pos == 32 and res.stop is Stop.BUDGET
