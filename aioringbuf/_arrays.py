"""``stream.arrays()``: a stream's records as numpy structured arrays.

The third way to iterate a stream, next to ``async for ev`` and
``batches()``, with the same records, order, accounting, closing and
overflow policies; the three may be mixed on one stream:

* ``"block"``: each step drains the ring straight into one array (see
  ``_columns``: one block copy per contiguous span, no Python object per
  record), up to ``maxsize`` records: the per-wakeup ``budget`` is sized for
  decoding objects, which costs some 20 times more per record. If ``async
  for`` left part of a batch undelivered, the next array is exactly that
  part, copied again from the ring, where it still is.
* ``"drop_oldest"`` / ``"drop_newest"`` (a queued stream): the pump queues
  decoded events (any style may ask for them next); each step turns what
  is ready in the queue into one array (:class:`QueuedArrays`).

Until a step returns, its records are the stream's current batch
(``RawStream._hold``: with nothing for ``async for`` to index), so closing
and stats treat them as undelivered; once returned they are delivered and
their space goes back to the kernel at once (``_deliver_all``: the array
is a copy), not at the next step as for ``batches()``. The stream's state
is changed only through those step methods of RawStream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from ._columns import Columns, columns_for
from ._source import BUSY_BACKOFF

if TYPE_CHECKING:
    from ._queue import OverflowQueue


class Arrays:
    """``async for arr in stream.arrays()``: one array of ``dtype_of(Event)`` per step."""

    __slots__ = ("_cols", "_stream")

    def __init__(self, stream: Any) -> None:  # a RawStream (which imports this module)
        self._stream = stream
        self._cols = columns_for(stream.event_type)  # TypeError/MissingDependencyError now

    def __aiter__(self) -> Arrays:
        return self

    async def __anext__(self) -> Any:
        s = self._stream
        try:
            rest = s._rest_span()
            if rest is not None:  # the rest of a batch another style began
                start, end, count = rest
                arr, _, _ = s._source.read_columns(self._cols, count, False, (start, end))
                s._deliver_all()
                return arr
            return await _fill(s, self._cols)
        except anyio.get_cancelled_exc_class():
            if not s._entered:  # a bare `async for`: cancelling it ends it
                s.close()
            raise


async def _fill(s: Any, cols: Columns) -> Any:
    """RawStream._fill_batch, into one array: wait for committed records,
    copy them out, and hand them over as one delivered batch."""
    src = await s._begin_fill()
    budget = s.maxsize  # not s._budget: a step costs a small fraction of a batch's
    waited = await s._wait_announced(src)
    while True:
        s._check_open()
        arr, start, res = src.read_columns(cols, budget, s._strict)
        pos, busy, discarded, decode_errors, error, _ = res
        s._count_skipped(discarded, decode_errors)
        if arr is not None:
            # Undelivered until returned: close() in the meantime retires it as such.
            s._hold(len(arr), start, pos, error)
            s._caught_up = len(arr) < budget  # read up to the producer or a busy record
            if not waited:
                try:
                    await anyio.lowlevel.checkpoint()  # one yield per batch, as _fill_batch
                except BaseException:
                    if not s.closed:
                        s._hold_as_events()  # any style takes them next
                    raise
                s._check_open()
            s._deliver_all()  # a copy: the kernel may have the space back now
            return arr
        src.commit(pos)  # skipped discards / bad records
        if error is not None:
            raise error
        if busy:
            await s._interruptible(anyio.sleep, BUSY_BACKOFF)
        elif src.quiet():  # after the commit, last before sleeping: see _source
            await s._wait_readable()
        else:
            await anyio.lowlevel.checkpoint()  # more came meanwhile: read it next
        waited = True


class QueuedArrays:
    """``async for arr in queued_stream.arrays()``: what the queue has ready, as one array."""

    __slots__ = ("_cols", "_queue")

    def __init__(self, queue: OverflowQueue[Any], event_type: Any) -> None:
        self._queue = queue
        self._cols = columns_for(event_type)  # TypeError/MissingDependencyError now

    def __aiter__(self) -> QueuedArrays:
        return self

    async def __anext__(self) -> Any:
        try:
            events = await self._queue.receive_ready()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        return self._cols.from_events(events)
