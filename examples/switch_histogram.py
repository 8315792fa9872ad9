"""A live per-second histogram of CPU time slices: ring -> columns -> Polars -> Parquet.

Every context switch on the machine becomes one 40-byte record
(bpf/tests/switches.bpf.c). ``stream.arrays()`` hands each drained batch
over as one numpy structured array, Polars aggregates it without a loop per
record, and the histogram (per second, per power-of-two slice length) is
written to Parquet at the end.

    sudo .venv/bin/python examples/switch_histogram.py --seconds 10 --out slices.parquet

Needs ``pip install 'aioringbuf[polars]'``. A slice is the time between two
switches on one CPU; the first switch of each CPU in a batch has no
predecessor in it and is counted in bucket -1.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import anyio
import polars as pl

import aioringbuf
from aioringbuf import U32, U64, CStr, Event

OBJ = pathlib.Path(__file__).resolve().parent.parent / "tests" / "bpf" / "switches.bpf.o"


class Switch(Event):
    """Mirrors struct switch_event in bpf/tests/switches.bpf.c."""

    ts_ns: U64
    cpu: U32
    prev_pid: U32
    next_pid: U32
    prev_running: U32
    next_comm: CStr[16]


def aggregate(batch: pl.DataFrame) -> pl.DataFrame:
    """One batch of switches -> (second, bucket, switches)."""
    slice_ns = pl.col("ts_ns").cast(pl.Int64).diff().over("cpu")
    return (
        batch.with_columns(second=pl.col("ts_ns") // 1_000_000_000, slice_ns=slice_ns)
        .with_columns(
            bucket=pl.when(pl.col("slice_ns") > 0)
            .then(pl.col("slice_ns").log(2).floor().cast(pl.Int32))
            .otherwise(-1)
        )
        .group_by("second", "bucket")
        .agg(switches=pl.len().cast(pl.UInt64))
    )


def combine(parts: list[pl.DataFrame]) -> pl.DataFrame:
    if not parts:
        return pl.DataFrame(schema={"second": pl.UInt64, "bucket": pl.Int32,
                                    "switches": pl.UInt64, "slice_lt_ns": pl.Int64})
    hist = pl.concat(parts).group_by("second", "bucket").agg(pl.col("switches").sum())
    first = hist["second"].min()
    return hist.with_columns(
        second=pl.col("second") - first,  # seconds since the first one seen
        slice_lt_ns=pl.when(pl.col("bucket") >= 0)
        .then(pl.lit(2, pl.Int64).pow(pl.col("bucket") + 1))
        .otherwise(None),
    ).sort("second", "bucket")


async def record(seconds: float, out: pathlib.Path) -> dict[str, object]:
    parts: list[pl.DataFrame] = []
    async with aioringbuf.load(OBJ) as obj, obj.ring_buffer("events", Switch) as events:
        with anyio.move_on_after(seconds):
            async for arr in events.arrays():
                parts.append(aggregate(pl.from_numpy(arr)))
        stats = events.stats()
    hist = combine(parts)
    hist.write_parquet(out)
    print(hist)
    return {"delivered": stats.delivered, "kernel_drops": stats.kernel_drops,
            "switches": int(hist["switches"].sum()), "batches": len(parts),
            "parquet": str(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("slices.parquet"))
    args = parser.parse_args()
    print(json.dumps(anyio.run(record, args.seconds, args.out)))


if __name__ == "__main__":
    main()
