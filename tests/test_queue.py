"""OverflowQueue on its own: each policy, exact counts, in-order exceptions, ends.

No kernel needed; the stream and broadcast tests use the same queue on real rings.
"""

from __future__ import annotations

import anyio
import pytest

from aioringbuf import _fast
from aioringbuf._queue import OverflowQueue

pytestmark = pytest.mark.anyio


def counts(q: OverflowQueue) -> tuple[int, int, int]:
    s = q.statistics()
    return s.received, s.dropped, s.current_buffer_used


def test_each_policy_on_a_full_queue() -> None:
    for policy, kept in (("drop_oldest", [3, 4, 5]), ("drop_newest", [1, 2, 3])):
        q: OverflowQueue[int] = OverflowQueue(3, policy)  # type: ignore[arg-type]
        for i in range(1, 6):
            q.send_nowait(i)
        assert [q.receive_nowait() for _ in range(3)] == kept
        assert counts(q) == (3, 2, 0) and q.statistics().peak_buffer_used == 3
    q = OverflowQueue(2, "block")
    q.send_nowait(1)
    q.send_nowait(2)
    with pytest.raises(anyio.WouldBlock):
        q.send_nowait(3)
    with pytest.raises(anyio.WouldBlock):
        q.send_many([3])
    assert counts(q) == (0, 0, 2)


def test_send_many_keeps_the_newest_or_the_oldest_of_queue_and_batch() -> None:
    q: OverflowQueue[int] = OverflowQueue(4, "drop_oldest")
    q.send_many([1, 2, 3])
    assert q.receive_nowait() == 1
    q.send_many(list(range(10, 17)))  # 2 queued + 7: the 4 newest stay
    assert [q.receive_nowait() for _ in range(4)] == [13, 14, 15, 16]
    assert counts(q) == (5, 5, 0)
    q = OverflowQueue(4, "drop_newest")
    q.send_many([1, 2, 3])
    q.send_many([4, 5, 6])
    assert [q.receive_nowait() for _ in range(4)] == [1, 2, 3, 4]
    assert counts(q) == (4, 2, 0)


def test_many_small_sends_stay_in_order_through_compaction() -> None:
    q: OverflowQueue[int] = OverflowQueue(100, "drop_oldest")
    got = []
    for i in range(10_000):
        q.send_nowait(i)
        if i % 3 == 0:
            got.append(q.receive_nowait())
    while len(q):
        got.append(q.receive_nowait())
    assert got == sorted(got) and counts(q)[0] + counts(q)[1] == 10_000
    assert len(q._batch) <= 200  # consumed items do not pile up


def test_an_exception_is_raised_in_its_place_once() -> None:
    q: OverflowQueue[int] = OverflowQueue(10, "drop_oldest")
    q.send_many([1, 2])
    q.send_exception(ValueError("third"))
    q.send_many([4])
    assert [q.receive_nowait(), q.receive_nowait()] == [1, 2]
    with pytest.raises(ValueError, match="third"):
        q.receive_nowait()
    assert q.receive_nowait() == 4
    with pytest.raises(anyio.WouldBlock):
        q.receive_nowait()


def test_finish_drains_then_ends_and_close_drops_and_counts() -> None:
    q: OverflowQueue[int] = OverflowQueue(10, "drop_oldest")
    q.send_many([1, 2])
    q.finish(lambda: anyio.BrokenResourceError("gone"))
    with pytest.raises(anyio.ClosedResourceError):
        q.send_nowait(3)
    assert q.receive_nowait() == 1 and q.receive_nowait() == 2
    for _ in range(2):  # and stays that way
        with pytest.raises(anyio.BrokenResourceError, match="gone"):
            q.receive_nowait()
    q = OverflowQueue(10, "drop_oldest")
    q.send_many([1, 2, 3])
    q.receive_nowait()
    q.close()
    assert counts(q) == (1, 2, 0)
    with pytest.raises(anyio.ClosedResourceError):
        q.receive_nowait()
    with pytest.raises(anyio.BrokenResourceError):
        q.send_nowait(4)


async def test_async_for_runs_on_the_cursor_and_wakes_every_receiver() -> None:
    q: OverflowQueue[int] = OverflowQueue(100, "drop_oldest")
    assert isinstance(q, _fast.Cursor)
    got: list[int] = []

    async def reader() -> None:
        async for item in q:
            got.append(item)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(reader)
        with anyio.fail_after(5):
            while q.statistics().tasks_waiting_receive < 2:
                await anyio.sleep(0.001)
            for i in range(50):
                q.send_nowait(i)
                await anyio.sleep(0)
            q.finish()
    assert sorted(got) == list(range(50))
    assert counts(q) == (50, 0, 0)
