"""stream.arrays() against the real kernel: the records, order, accounting,
closing and overflow policies of batches(), as numpy structured arrays."""

from __future__ import annotations

import itertools
import struct

import anyio
import pytest
from perfgen import PHead, PRec
from ringgen import DISCARD_ODD, RESERVE, Fixed, Rec

import aioringbuf
from aioringbuf import U32, U64, Bytes, Event

np = pytest.importorskip("numpy")
pytestmark = pytest.mark.anyio


class Seq8(Event):
    """A ringgen OUTPUT record with an 8-byte payload: 16 bytes, 24 in the ring."""

    seq: U64
    payload: Bytes[8]


class PPay(Event):
    """A perfgen record with an 8-byte payload: 24 bytes, 40 in a perf ring."""

    seq: U64
    cpu: U32
    len: U32
    payload: Bytes[8]


def accounted(s) -> int:
    return s.delivered + (s.kernel_drops or 0) + s.queue_drops + s.discarded + s.decode_errors


async def read_arrays(stream, produced: int, timeout: float = 30.0) -> list:
    """Arrays until every produced record is delivered or counted."""
    got: list = []
    with anyio.fail_after(timeout):
        it = stream.arrays()
        while accounted(stream.stats()) < produced:
            got.append(await it.__anext__())
    return got


def seqs(arrays: list) -> list[int]:
    return [int(x) for arr in arrays for x in arr["seq"]]


# -- ring buffer -------------------------------------------------------------

async def test_records_arrive_in_order_as_columns(ringgen_factory) -> None:
    gen = ringgen_factory(1 << 20)
    async with gen.obj.ring_buffer("events", Seq8) as rb:
        gen.produce(3000, b"abcdefgh")
        got = await read_arrays(rb, gen.produced())
        s = rb.stats()
    assert all(arr.dtype == aioringbuf.types.dtype_of(Seq8) for arr in got)
    assert seqs(got) == list(range(3000))
    assert {bytes(p) for arr in got for p in arr["payload"]} == {b"abcdefgh"}
    assert (s.delivered, s.kernel_drops, s.queue_drops, s.decode_errors) == (3000, 0, 0, 0)
    assert max(len(a) for a in got) > 1  # a drain is one array, not one per record


async def test_discarded_records_are_masked_out(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Fixed) as rb:
        gen.produce(501, flags=RESERVE | DISCARD_ODD, aux=7)
        got = await read_arrays(rb, gen.produced())
        s = rb.stats()
    assert seqs(got) == list(range(0, 501, 2))
    assert {int(a) for arr in got for a in arr["aux"]} == {7}
    assert (s.delivered, s.discarded) == (251, 250)


async def test_records_wrap_through_the_double_mapping(ringgen_factory) -> None:
    # 24-byte records in a one-page ring: many laps, a span across the end on most.
    gen = ringgen_factory(4096)
    seen: list[int] = []
    async with gen.obj.ring_buffer("events", Seq8) as rb:
        it = rb.arrays()
        with anyio.fail_after(30):
            for lap in range(60):
                gen.produce(100 + lap, b"12345678")
                while len(seen) < gen.produced():
                    seen += seqs([await it.__anext__()])
        assert rb.stats().kernel_drops == 0
    assert seen == list(range(gen.produced()))


async def test_records_of_another_size_are_decode_errors(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Fixed) as rb:
        for i in range(10):
            gen.produce(1, flags=RESERVE) if i % 2 else gen.produce(1, b"bad")
        got = await read_arrays(rb, gen.produced())
        assert seqs(got) == [1, 3, 5, 7, 9]
        assert rb.stats().decode_errors == 5
    async with gen.obj.ring_buffer("events", Fixed, on_decode_error="raise") as rb:
        first = gen.produced()
        gen.produce(2, flags=RESERVE)
        gen.produce(1, b"x")  # 9 bytes: not a Fixed
        gen.produce(1, flags=RESERVE)
        it = rb.arrays()
        assert seqs([await it.__anext__()]) == [first, first + 1]
        with pytest.raises(aioringbuf.RecordSizeError, match="9-byte record"):
            await it.__anext__()
        assert seqs([await it.__anext__()]) == [first + 3]  # the stream goes on


async def test_three_styles_mix_on_one_stream(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Seq8, budget=64) as rb:
        gen.produce(200, b"abcdefgh")
        one = await rb.receive()  # takes a batch of 64, delivers one
        rest = await rb.arrays().__anext__()  # exactly the other 63, from the ring
        assert len(rest) == 63
        batch = await rb.batches().__anext__()
        arr = await rb.arrays().__anext__()
        evs = [await rb.receive() for _ in range(200 - 1 - 63 - len(batch) - len(arr))]
        s = rb.stats()
    got = [one.seq, *seqs([rest]), *(e.seq for e in batch), *seqs([arr]), *(e.seq for e in evs)]
    assert got == list(range(200))
    assert (s.delivered, s.queue_len) == (200, 0)


async def test_a_cancelled_step_leaves_its_records_for_the_next(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Seq8) as rb:
        gen.produce(10, b"abcdefgh")
        with anyio.CancelScope() as scope:
            scope.cancel()
            await rb.arrays().__anext__()  # read, then cancelled at its yield
        assert rb.stats().delivered == 0
        got = [(await rb.receive()).seq for _ in range(10)]
        assert got == list(range(10))
        assert rb.stats().delivered == 10


async def test_closing_keeps_undelivered_records_in_the_ring(ringgen_factory) -> None:
    gen = ringgen_factory()
    gen.produce(10, b"abcdefgh")
    async with gen.obj.ring_buffer("events", Seq8, maxsize=4) as rb:
        first = await rb.arrays().__anext__()  # a step takes at most maxsize
        assert rb.stats().delivered == 4
    async with gen.obj.ring_buffer("events", Seq8) as rb:
        rest = await read_arrays(rb, 6)
    assert seqs([first, *rest]) == list(range(10))


async def test_close_ends_a_waiting_step(ringgen_factory) -> None:
    gen = ringgen_factory()
    rb = gen.obj.ring_buffer("events", Seq8)
    async with rb:
        async def close_soon() -> None:
            await anyio.sleep(0.05)
            rb.close()

        async with anyio.create_task_group() as tg:
            tg.start_soon(close_soon)
            with anyio.fail_after(5), pytest.raises(anyio.ClosedResourceError):
                await rb.arrays().__anext__()


@pytest.mark.parametrize("overflow", ["block", "drop_oldest", "drop_newest"])
async def test_overload_accounting_per_policy(ringgen_factory, overflow: str) -> None:
    gen = ringgen_factory(64 * 1024)
    total = 200_000
    got: list[int] = []
    async with gen.obj.ring_buffer("events", Seq8, maxsize=1000, overflow=overflow) as rb:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: gen.produce_in_thread(total, chunk=20_000,
                                                        payload=b"abcdefgh"))
            it = rb.arrays()
            with anyio.fail_after(120):
                while True:
                    s = rb.stats()
                    if gen.produced() == total and accounted(s) == total:
                        break
                    arr = await it.__anext__()
                    assert len(arr) <= 1000
                    got += seqs([arr])
                    await anyio.sleep(0.002)  # a slow consumer
    s = rb.stats()
    print(f"{overflow}: delivered={s.delivered} kernel_drops={s.kernel_drops} "
          f"queue_drops={s.queue_drops}")
    assert s.delivered + s.kernel_drops + s.queue_drops == total
    assert s.delivered == len(got)
    assert all(a < b for a, b in itertools.pairwise(got))  # in order, never twice
    if overflow == "block":
        assert s.queue_drops == 0 and s.kernel_drops > 0
    else:
        assert s.queue_drops > 0


async def test_a_corrupt_ring_breaks_every_style(ringgen_factory) -> None:
    """After the walk found a record running past the producer position, each
    style says the stream is broken (arrays() too), not "corrupt" again."""
    from aioringbuf._ring import RingCorrupt

    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Seq8) as rb:
        gen.produce(1, struct.pack("<II", 1000, 0))  # a length of 1000 inside the record
        # A stand-in for a kernel bug: the consumer position lands inside the
        # record (after its header and seq), on that length.
        mem = rb._source._mem
        mem.publish_consumer_pos(mem.consumer_pos() + 16)
        with pytest.raises(RingCorrupt, match="claims 1000 bytes"):
            await rb.batches().__anext__()
        for step in (rb.__anext__, rb.batches().__anext__, rb.arrays().__anext__):
            with pytest.raises(anyio.BrokenResourceError, match="cannot be read any more"):
                await step()
    assert rb.closed


async def test_types_without_columns_are_refused(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Rec) as rb:
        with pytest.raises(TypeError, match="no fixed size"):
            rb.arrays()
    async with gen.obj.ring_buffer("events") as rb:
        with pytest.raises(TypeError, match="raw bytes"):
            rb.arrays()


# -- perf buffer -------------------------------------------------------------

async def test_perf_records_in_order_per_cpu(perfgen_factory) -> None:
    gen = perfgen_factory()
    cpus = aioringbuf._perfmap.online_cpus()[:2]
    expected: dict[int, list[int]] = {c: [] for c in cpus}
    async with gen.obj.perf_buffer("events", PHead, per_cpu_size=1 << 20) as pb:
        for round_ in range(10):
            for cpu in cpus:
                start = gen.produced()
                gen.produce(50 + round_, cpu=cpu)
                expected[cpu] += range(start, gen.produced())
        got = await read_arrays(pb, gen.produced())
        s = pb.stats()
    per_cpu: dict[int, list[int]] = {c: [] for c in cpus}
    for arr in got:
        assert arr.dtype == aioringbuf.types.dtype_of(PHead)
        for seq, cpu in zip(arr["seq"], arr["cpu"], strict=True):
            per_cpu[int(cpu)].append(int(seq))
    assert per_cpu == expected
    assert (s.kernel_drops, s.queue_drops, s.decode_errors) == (0, 0, 0)


async def test_perf_records_wrap_around_a_small_ring(perfgen_factory) -> None:
    # 40-byte records in a one-page ring: most laps split one across the end.
    gen = perfgen_factory()
    seen: list = []
    async with gen.obj.perf_buffer("events", PPay, per_cpu_size=4096) as pb:
        it = pb.arrays()
        with anyio.fail_after(30):
            for lap in range(40):
                gen.produce(60 + lap, b"12345678", cpu=0)
                while len(seen) < gen.produced():
                    seen += list(await it.__anext__())
        assert pb.stats().kernel_drops == 0
    assert [int(r["seq"]) for r in seen] == list(range(gen.produced()))
    assert {(int(r["len"]), bytes(r["payload"])) for r in seen} == {(8, b"12345678")}


async def test_perf_losses_are_counted(perfgen_factory) -> None:
    gen = perfgen_factory()
    async with gen.obj.perf_buffer("events", PHead, per_cpu_size=4096) as pb:
        gen.produce(1000, cpu=0)  # 32-byte records: 127 fit
        got = await read_arrays(pb, gen.produced())
        gen.produce(10, cpu=0)  # the next sample follows the PERF_RECORD_LOST
        got += await read_arrays(pb, gen.produced())
        s = pb.stats()
    assert s.delivered + s.kernel_drops == 1010 and s.kernel_drops > 0
    assert seqs(got)[-10:] == list(range(1000, 1010))
    assert all(a < b for a, b in itertools.pairwise(seqs(got)))


async def test_perf_variable_records_are_refused_and_mixing_works(perfgen_factory) -> None:
    gen = perfgen_factory()
    async with gen.obj.perf_buffer("events", PRec) as pb:
        with pytest.raises(TypeError, match="no fixed size"):
            pb.arrays()
    async with gen.obj.perf_buffer("events", PHead, budget=32) as pb:
        gen.produce(100, cpu=0)
        one = await pb.receive()
        rest = await pb.arrays().__anext__()
        more = await read_arrays(pb, 100)
    assert [one.seq, *seqs([rest, *more])] == list(range(100))


async def test_perf_close_counts_records_read_but_not_delivered(perfgen_factory) -> None:
    gen = perfgen_factory()
    async with gen.obj.perf_buffer("events", PHead) as pb:
        gen.produce(10, cpu=0)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await pb.arrays().__anext__()  # read, then cancelled: still undelivered
        first = await pb.receive()
    s = pb.stats()
    assert first.seq == 0
    assert (s.delivered, s.queue_drops) == (1, 9)


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest"])
async def test_perf_drop_policies(perfgen_factory, overflow: str) -> None:
    gen = perfgen_factory()
    async with gen.obj.perf_buffer("events", PHead, maxsize=100, overflow=overflow) as pb:
        gen.produce(50, cpu=0)
        await anyio.sleep(0.05)  # the pump queues them
        gen.produce(200, cpu=0)
        with anyio.fail_after(10):
            while pb.stats().queue_len < 100 or accounted(pb.stats()) < 250 - 100:
                await anyio.sleep(0.01)
        arr = await pb.arrays().__anext__()
        s = pb.stats()
    assert len(arr) == 100 and s.delivered == 100
    assert s.delivered + s.queue_drops + s.kernel_drops == 250
    want = list(range(150, 250)) if overflow == "drop_oldest" else list(range(100))
    assert seqs([arr]) == want


@pytest.mark.timeout(120)
async def test_two_cpus_producing_at_once(ringgen_factory) -> None:
    # Producers on two CPUs reserve in between each other's commits: the
    # walk meets records still BUSY and must stop there, never skip them.
    cpus = aioringbuf._perfmap.online_cpus()[:2]
    if len(cpus) < 2:
        pytest.skip("needs two online CPUs")
    gen = ringgen_factory(1 << 24)
    per_cpu = 500_000
    seen: list[int] = []
    busy_stops = 0
    async with gen.obj.ring_buffer("events", Seq8) as rb:
        src = rb._source
        read = src.read_columns

        def counting(*args, **kw):
            nonlocal busy_stops
            out = read(*args, **kw)
            busy_stops += out[2].busy
            return out

        src.read_columns = counting

        def produce_on(cpu: int) -> None:
            from perfgen import on_cpu

            with on_cpu(cpu):
                gen.produce(per_cpu, b"abcdefgh")

        async with anyio.create_task_group() as tg:
            for cpu in cpus:
                tg.start_soon(anyio.to_thread.run_sync, produce_on, cpu)
            it = rb.arrays()
            with anyio.fail_after(100):
                while accounted(rb.stats()) < 2 * per_cpu:
                    seen += seqs([await it.__anext__()])
        s = rb.stats()
    print(f"busy stops: {busy_stops}, kernel drops: {s.kernel_drops}")
    assert s.delivered + s.kernel_drops == 2 * per_cpu == gen.produced()
    assert len(seen) == len(set(seen)) == s.delivered  # each record once
