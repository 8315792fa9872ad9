"""examples/switch_histogram.py for real: a live stream of the machine's
context switches, columns into Polars, the histogram out as Parquet."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

pl = pytest.importorskip("polars")

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_histogram_example_writes_what_it_streamed(bpf_objects: pathlib.Path,
                                                    tmp_path: pathlib.Path) -> None:
    if not (bpf_objects / "switches.bpf.o").exists():
        subprocess.run(["make", "-C", str(ROOT / "bpf")], check=True)
    out = tmp_path / "slices.parquet"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "switch_histogram.py"),
         "--seconds", "1.5", "--out", str(out)],
        capture_output=True, text=True, timeout=45, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    hist = pl.read_parquet(out)
    assert hist.columns == ["second", "bucket", "switches", "slice_lt_ns"]
    # Every delivered record is in the histogram once; a live machine switches.
    assert summary["delivered"] > 0 and summary["batches"] > 0
    assert int(hist["switches"].sum()) == summary["switches"] == summary["delivered"]
    assert hist["second"].min() == 0 and hist["bucket"].min() >= -1
    assert hist.filter(pl.col("bucket") >= 0)["slice_lt_ns"].null_count() == 0
