"""RingBuffer against the real kernel: order, discards, sizes, wrap, counts, accounting."""

from __future__ import annotations

import itertools

import anyio
import pytest
from ringgen import DISCARD_ODD, FORCE_WAKEUP, NO_WAKEUP, RESERVE, Fixed, Rec, capacity

import aioringbuf

pytestmark = pytest.mark.anyio


async def read_all(rb: aioringbuf.RingBuffer, gen, timeout: float = 30.0) -> list:
    """Read until every produced record is accounted for (delivered or dropped)."""
    got: list = []
    produced = gen.produced()
    with anyio.fail_after(timeout):
        while True:
            s = rb.stats()
            done = s.delivered + s.kernel_drops + s.queue_drops + s.discarded + s.decode_errors
            if done == produced:
                return got
            got.append(await rb.receive())


def assert_consecutive(events: list, start: int = 0) -> None:
    assert [e.seq for e in events] == list(range(start, start + len(events)))


async def test_sequence_numbers_arrive_in_order(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Rec) as rb:
        gen.produce(1000, b"abc")
        got = await read_all(rb, gen)
    assert_consecutive(got)
    assert all(e.payload == b"abc" for e in got)
    s = rb.stats()
    assert (s.delivered, s.kernel_drops, s.queue_drops, s.decode_errors) == (1000, 0, 0, 0)


async def test_discarded_records_are_skipped(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Fixed) as rb:
        gen.produce(501, flags=RESERVE | DISCARD_ODD, aux=7)
        got = await read_all(rb, gen)
    assert [e.seq for e in got] == list(range(0, 501, 2))
    assert {e.aux for e in got} == {7}
    assert rb.stats().discarded == 250


async def test_variable_size_records_keep_their_bytes(ringgen_factory) -> None:
    gen = ringgen_factory()
    payloads = [bytes((i + j) % 256 for j in range(n)) for i, n in enumerate(
        [0, 1, 7, 8, 9, 63, 64, 65, 255, 1000, 2047, 2048])]
    async with gen.obj.ring_buffer("events", Rec) as rb:
        for p in payloads:
            gen.produce(1, p)
        got = await read_all(rb, gen)
    assert [e.payload for e in got] == payloads
    assert_consecutive(got)


async def test_raw_bytes_without_event_type(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events") as rb:
        gen.produce(3, b"xyz")
        got = [await rb.receive() for _ in range(3)]
    assert got == [i.to_bytes(8, "little") + b"xyz" for i in range(3)]


@pytest.mark.parametrize("payload_len", [100, 1000])
async def test_records_straddle_the_wrap_point(ringgen_factory, payload_len: int) -> None:
    # A one-page ring and record sizes that do not divide it: many laps,
    # with a record split across the end of the data area on most of them.
    gen = ringgen_factory(4096)
    payload = bytes(range(256)) * (payload_len // 256) + bytes(range(payload_len % 256))
    async with gen.obj.ring_buffer("events", Rec) as rb:
        got = []
        for _ in range(300):
            gen.produce(2, payload)
            got += [await rb.receive(), await rb.receive()]
        assert rb.stats().consumer_pos // 4096 >= 15  # laps around the ring
    assert_consecutive(got)
    assert all(e.payload == payload for e in got)
    assert rb.stats().kernel_drops == 0


@pytest.mark.parametrize("label", ["zero", "one", "capacity-1", "capacity", "8x capacity"])
async def test_burst_counts_around_capacity(ringgen_factory, label: str) -> None:
    ring = 4096
    cap = capacity(ring, 8)
    n = {"zero": 0, "one": 1, "capacity-1": cap - 1, "capacity": cap, "8x capacity": 8 * cap}[label]
    gen = ringgen_factory(ring)
    async with gen.obj.ring_buffer("events", Rec) as rb:
        gen.produce(n, b"12345678")  # nobody reads during the burst
        got = await read_all(rb, gen)
        with anyio.move_on_after(0.05):  # and nothing more is there
            got.append(await rb.receive())
    assert len(got) == min(n, cap)
    assert_consecutive(got)
    s = rb.stats()
    assert s.kernel_drops == n - min(n, cap)
    assert s.delivered + s.kernel_drops == gen.produced() == n


async def test_million_records_all_delivered_in_order(ringgen_factory) -> None:
    # Produced in chunks of 100,000 that fit the 4 MiB ring, each while the
    # consumer is reading the previous one: no drops are allowed at all.
    gen = ringgen_factory(4 << 20)
    total, chunk = 1_000_000, 100_000
    expected = 0
    async with gen.obj.ring_buffer("events", Rec, maxsize=8192) as rb:
        with anyio.fail_after(120):
            for _ in range(total // chunk):
                await anyio.to_thread.run_sync(gen.produce, chunk)
                for _ in range(chunk):
                    ev = await rb.receive()
                    if ev.seq != expected:
                        pytest.fail(f"record {ev.seq} arrived where {expected} was due")
                    expected += 1
    s = rb.stats()  # after close: the last batch has been handed back
    print(f"1M run: delivered={s.delivered} kernel_drops={s.kernel_drops} "
          f"queue_drops={s.queue_drops} produced={gen.produced()}")
    assert s.delivered == gen.produced() == total
    assert (s.kernel_drops, s.queue_drops, s.decode_errors, s.avail_bytes) == (0, 0, 0, 0)


async def test_million_records_overload_exact_accounting(ringgen_factory) -> None:
    # The producer (~6 M records/s in-kernel) outruns the consumer: most
    # records are dropped at reserve time, and every one is counted.
    gen = ringgen_factory(1 << 20)
    total = 1_000_000
    last = -1
    in_order = True
    async with gen.obj.ring_buffer("events", Rec, maxsize=8192) as rb:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: gen.produce_in_thread(total, chunk=100_000))
            with anyio.fail_after(120):
                while True:
                    s = rb.stats()
                    if gen.produced() == total and s.delivered + s.kernel_drops == total:
                        break
                    ev = await rb.receive()
                    in_order &= ev.seq > last
                    last = ev.seq
    s = rb.stats()
    print(f"1M overload: delivered={s.delivered} kernel_drops={s.kernel_drops}")
    assert in_order
    assert s.delivered + s.kernel_drops == total
    assert s.kernel_drops > 0
    assert s.queue_drops == 0 and s.decode_errors == 0


@pytest.mark.parametrize("overflow", ["block", "drop_oldest", "drop_newest"])
async def test_overload_accounting_per_policy(ringgen_factory, overflow: str) -> None:
    # A producer far faster than a consumer that sleeps every 500 events.
    gen = ringgen_factory(64 * 1024)
    total = 300_000
    seqs: list[int] = []
    async with gen.obj.ring_buffer("events", Rec, maxsize=1000, overflow=overflow) as rb:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: gen.produce_in_thread(total, chunk=20_000))
            with anyio.fail_after(120):
                while True:
                    s = rb.stats()
                    done = s.delivered + s.kernel_drops + s.queue_drops
                    if gen.produced() == total and done == total:
                        break
                    seqs.append((await rb.receive()).seq)
                    if len(seqs) % 500 == 0:
                        await anyio.sleep(0.002)
    s = rb.stats()
    print(f"{overflow}: delivered={s.delivered} kernel_drops={s.kernel_drops} "
          f"queue_drops={s.queue_drops}")
    assert s.delivered + s.kernel_drops + s.queue_drops == total
    assert s.delivered == len(seqs)
    assert all(a < b for a, b in itertools.pairwise(seqs))  # in order, never twice
    if overflow == "block":
        assert s.queue_drops == 0  # block never drops in user space
        assert s.kernel_drops > 0
    else:
        assert s.queue_drops > 0


async def test_no_wakeup_records_need_flush_interval(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Rec) as rb:
        # Caught up and waiting: a NO_WAKEUP commit never wakes the consumer.
        async with anyio.create_task_group() as tg:
            async def produce_later() -> None:
                await anyio.sleep(0.05)
                gen.produce(1, flags=NO_WAKEUP)
            tg.start_soon(produce_later)
            with anyio.move_on_after(0.5) as scope:
                await rb.receive()
        assert scope.cancelled_caught
        assert rb.stats().avail_bytes > 0  # the record is there, unannounced
    async with gen.obj.ring_buffer("events", Rec, flush_interval=0.02) as rb:
        gen.produce(1, flags=NO_WAKEUP)
        with anyio.fail_after(5):
            got = [await rb.receive(), await rb.receive()]
    assert [e.seq for e in got] == [0, 1]


async def test_force_wakeup_wakes_a_lagging_consumer(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Rec) as rb:
        gen.produce(1, flags=FORCE_WAKEUP)
        with anyio.fail_after(5):
            assert (await rb.receive()).seq == 0


async def test_pinned_map_resumes_where_the_last_consumer_stopped(
    ringgen_factory, bpffs, tmp_path
) -> None:
    gen = ringgen_factory()
    pin_dir = bpffs / f"aioringbuf-test-{tmp_path.name}"
    pin_dir.mkdir()
    try:
        path = str(pin_dir / "events")
        aioringbuf._syscall.obj_pin(gen.obj.map_fd("events"), path)
        aioringbuf._syscall.obj_pin(gen.obj.map_fd("events_drops"), path + "_drops")
        gen.produce(100)
        first: list = []
        async with aioringbuf.RingBuffer.from_pinned(path, Rec) as rb:
            async for ev in rb:  # the whole burst is one batch: stop inside it
                first.append(ev)
                if len(first) == 30:
                    break
        gen.produce(20)
        async with aioringbuf.RingBuffer.from_pinned(path, Rec) as rb:
            assert rb.stats().consumer_pos > 0  # not assumed to start at 0
            rest = [await rb.receive() for _ in range(90)]
            assert rb.stats().kernel_drops == 0
        assert_consecutive(first + rest)
    finally:
        for p in pin_dir.iterdir():
            p.unlink()
        pin_dir.rmdir()


async def test_strict_decoding_raises_in_stream_order(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Fixed, on_decode_error="raise") as rb:
        gen.produce(2, flags=RESERVE)  # 16-byte records: fit Fixed
        gen.produce(1, b"x")  # 9 bytes: does not
        gen.produce(1, flags=RESERVE)
        assert [(await rb.receive()).seq for _ in range(2)] == [0, 1]
        with pytest.raises(aioringbuf.RecordSizeError, match="9-byte record"):
            await rb.receive()
        assert (await rb.receive()).seq == 3  # the stream goes on
        assert rb.stats().decode_errors == 1


async def test_counted_decode_errors_never_stop_the_stream(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Fixed) as rb:
        for i in range(10):
            gen.produce(1, flags=RESERVE) if i % 2 else gen.produce(1, b"bad")
        got = await read_all(rb, gen)
        assert [e.seq for e in got] == [1, 3, 5, 7, 9]
        assert rb.stats().decode_errors == 5
