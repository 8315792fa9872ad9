"""Long overload soak: ``sudo .venv/bin/python benchmarks/soak.py --minutes 10``.

The same run as tests/test_soak.py, for as long as you like, on the backend
you choose; prints one table row per run. Needs `make -C bpf` (test objects).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import anyio  # noqa: E402
from ringgen import Generator  # noqa: E402
from soak import soak  # noqa: E402

import aioringbuf  # noqa: E402


async def main(args: argparse.Namespace) -> None:
    obj = aioringbuf.load(ROOT / "tests/bpf/ringgen.bpf.o", attach=False,
                          map_sizes={"events": args.ring}).open()
    gen = Generator(obj)
    try:
        r = await soak(gen, args.minutes * 60, f"/sys/fs/bpf/aioringbuf-soak-{os.getpid()}",
                       args.overflow)
    finally:
        gen.close()
        obj.close()
    rss = r.rss_kib
    print(f"{'backend':<8} {'seconds':>7} {'produced':>12} {'delivered':>12} {'kernel_drops':>12} "
          f"{'exact':>5} {'rss_start_kib':>13} {'rss_max_kib':>11} {'growth_kib':>10} "
          f"{'max_lateness_ms':>15} {'cpu_us/event':>12}")
    exact = r.delivered + r.kernel_drops + r.queue_drops == r.produced
    print(f"{args.backend:<8} {r.seconds:>7.0f} {r.produced:>12} {r.delivered:>12} "
          f"{r.kernel_drops:>12} {exact!s:>5} {rss[0]:>13} {max(rss):>11} "
          f"{r.rss_growth_after_warmup_kib:>10} {r.max_timer_lateness * 1000:>15.1f} "
          f"{r.consumer_cpu_s / max(r.delivered, 1) * 1e6:>12.2f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--backend", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    p.add_argument("--overflow", choices=["block", "drop_oldest", "drop_newest"], default="block")
    p.add_argument("--ring", type=int, default=1 << 20)
    a = p.parse_args()
    backend, opts = ("asyncio", {"use_uvloop": True}) if a.backend == "uvloop" else (a.backend, {})
    anyio.run(main, a, backend=backend, backend_options=opts)
