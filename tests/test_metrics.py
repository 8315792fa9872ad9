"""Prometheus metrics: every scrape equals stats(), for streams, hubs and the exporter.

In-process scrapes (generate_latest, then prometheus_client's own parser)
happen between two awaits, so the stream cannot move in between and the
comparison with stats() is exact. The exporter runs as a user runs it: a
process, scraped over HTTP, stopped with a signal.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import anyio
import httpx
import pytest
from cliproc import SERVING, child_env, start_aioringbuf, wait_stderr
from kernelstate import Attached
from privileges import AS_NOBODY
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from ringgen import Rec, capacity

import aioringbuf
from aioringbuf import Broadcast, exec_events, register_metrics

STREAM_COUNTERS = {
    "aioringbuf_events_delivered_total": "delivered",
    "aioringbuf_events_kernel_dropped_total": "kernel_drops",
    "aioringbuf_events_queue_dropped_total": "queue_drops",
    "aioringbuf_decode_errors_total": "decode_errors",
    "aioringbuf_events_discarded_total": "discarded",
}
HUB_COUNTERS = {
    "aioringbuf_hub_subscriptions_total": "subscriptions",
    "aioringbuf_hub_disconnects_total": "disconnects",
    "aioringbuf_hub_events_delivered_total": "delivered",
    "aioringbuf_hub_events_dropped_total": "dropped",
    "aioringbuf_hub_events_unobserved_total": "unobserved",
}


def scrape(registry: CollectorRegistry) -> dict[tuple[str, str | None], float]:
    """{(sample name, stream label): value}, through the text format and back."""
    text = generate_latest(registry).decode()
    return {(s.name, s.labels.get("stream")): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def assert_stream_matches(samples: dict, name: str, st: aioringbuf.StreamStats) -> None:
    for metric, field in STREAM_COUNTERS.items():
        assert samples[metric, name] == getattr(st, field), metric
    assert samples["aioringbuf_ring_fill_ratio", name] == st.avail_bytes / st.ring_size
    assert samples["aioringbuf_ring_size_bytes", name] == st.ring_size
    assert samples["aioringbuf_queue_length", name] == st.queue_len
    assert samples["aioringbuf_queue_peak", name] == st.queue_peak


class TestInProcess:
    pytestmark = pytest.mark.anyio

    @pytest.mark.parametrize("overflow", ["block", "drop_oldest"])
    async def test_counters_equal_stats_under_overload(self, ringgen_factory,
                                                       overflow: str) -> None:
        ring = 16 * 1024
        cap = capacity(ring, 0)
        gen = ringgen_factory(ring)
        registry = CollectorRegistry()
        async with gen.obj.ring_buffer("events", Rec, maxsize=50, overflow=overflow) as rb:
            register_metrics(rb, name="gen", registry=registry)
            gen.produce(3 * cap)  # nobody reads meanwhile: the ring fills
            with anyio.fail_after(10):
                while overflow != "block" and rb.stats().avail_bytes:
                    await anyio.sleep(0.001)  # the background pump empties the ring
                got = [await rb.receive() for _ in range(10)]
            st = rb.stats()
            samples = scrape(registry)
        assert_stream_matches(samples, "gen", st)
        assert [ev.seq for ev in got] == (list(range(10)) if overflow == "block"
                                          else list(range(cap - 50, cap - 40)))
        assert st.kernel_drops == 2 * cap and st.delivered == 10
        assert st.queue_drops == (0 if overflow == "block" else cap - 50)
        if overflow == "block":
            assert 0.9 < samples["aioringbuf_ring_fill_ratio", "gen"] < 1
        print(f"metrics {overflow}: delivered={st.delivered} kernel_drops={st.kernel_drops} "
              f"queue_drops={st.queue_drops} fill={st.avail_bytes / st.ring_size:.3f}")

    async def test_hub_metrics_follow_subscribers(self, ringgen_factory) -> None:
        gen = ringgen_factory()
        registry = CollectorRegistry()
        async with gen.obj.ring_buffer("events", Rec) as rb, Broadcast(rb) as hub:
            register_metrics(hub, name="hub", registry=registry)
            assert scrape(registry)["aioringbuf_hub_subscribers", "hub"] == 0
            gen.produce(5)  # unobserved
            with anyio.fail_after(10):
                while hub.stats().events < 5:
                    await anyio.sleep(0.001)
            slow = hub.subscribe(maxsize=2, policy="disconnect")
            async with hub.subscribe(maxsize=2) as sub:
                assert scrape(registry)["aioringbuf_hub_subscribers", "hub"] == 2
                gen.produce(3)
                with anyio.fail_after(10):
                    while not slow.disconnected:
                        await anyio.sleep(0.001)
                await sub.receive()
                samples, hs, st = scrape(registry), hub.stats(), rb.stats()
            slow.close()
            after = scrape(registry)
        for metric, field in HUB_COUNTERS.items():
            assert samples[metric, "hub"] == getattr(hs, field), metric
        assert samples["aioringbuf_hub_subscribers", "hub"] == hs.subscribers == 1
        assert samples["aioringbuf_hub_queue_length", "hub"] == hs.queued == 3
        assert_stream_matches(samples, "hub", st)
        assert (hs.events, hs.unobserved, hs.disconnects, hs.dropped, hs.delivered) == (
            8, 5, 1, 2, 1)
        assert after["aioringbuf_hub_subscribers", "hub"] == 0
        assert after["aioringbuf_hub_events_dropped_total", "hub"] == 2 + 1 + 2  # + queued

    async def test_exec_stream_before_and_after_loading(self, kernel) -> None:
        registry = CollectorRegistry()
        events = exec_events()
        registration = register_metrics(events, name="exec", registry=registry)
        assert not [k for k in scrape(registry) if k[1] == "exec"]  # not loaded: no samples
        async with events:
            await anyio.to_thread.run_sync(lambda: subprocess.run(["/bin/true"], check=True))
            with anyio.fail_after(10):
                await events.receive()
            samples, st = scrape(registry), events.stats()
        assert_stream_matches(samples, "exec", st)
        registration.unregister()
        assert scrape(registry) == {}


def test_one_registry_many_streams(ringgen_factory) -> None:
    registry = CollectorRegistry()
    a = ringgen_factory().obj.ring_buffer("events", Rec)
    b = aioringbuf.RingBuffer(ringgen_factory().obj.map_fd("events"), Rec)  # no drop counter
    try:
        ra = register_metrics(a, name="a", registry=registry)
        rb = register_metrics(b, name="b", registry=registry)
        with pytest.raises(ValueError, match="already registered"):
            register_metrics(b, name="a", registry=registry)
        with pytest.raises(TypeError, match="stats"):
            register_metrics(object(), name="c", registry=registry)
        samples = scrape(registry)
        assert ("aioringbuf_events_kernel_dropped_total", "a") in samples
        assert ("aioringbuf_events_kernel_dropped_total", "b") not in samples  # None: left out
        assert samples["aioringbuf_events_delivered_total", "b"] == 0
        ra.unregister()
        ra.unregister()  # idempotent
        assert {stream for _, stream in scrape(registry)} == {"b"}
        rb.unregister()
        assert scrape(registry) == {}
        again = register_metrics(a, name="a", registry=registry)
        assert ("aioringbuf_queue_length", "a") in scrape(registry)
        again.unregister()
        default = register_metrics(a, name="default-registry-test")  # prometheus_client's global
        try:
            assert ("aioringbuf_queue_length", "default-registry-test") in scrape(REGISTRY)
        finally:
            default.unregister()
        assert ("aioringbuf_queue_length", "default-registry-test") not in scrape(REGISTRY)
    finally:
        a.close()
        b.close()


# -- the exporter, as a process ---------------------------------------------------

def start_exporter(*args: str, prefix: tuple[str, ...] = (), **kw) -> subprocess.Popen:
    return start_aioringbuf("exporter", "--port", "0", *args, prefix=prefix, **kw)


def wait_serving(proc: subprocess.Popen, timeout: float = 30) -> str:
    """The base URL, once the exporter says it serves (after attaching)."""
    return wait_stderr(proc, SERVING, timeout=timeout)[0].group(1).decode()


def exec_counters(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.labels.get("stream") == "exec"}


@pytest.mark.parametrize("backend", ["asyncio", "uvloop", "trio"])
def test_exporter_serves_exec_counters(kernel, backend: str) -> None:
    attached = Attached()
    proc = start_exporter("--backend", backend)
    try:
        base = wait_serving(proc)
        attached.seen(proc.pid)
        before = exec_counters(base)["aioringbuf_events_delivered_total"]
        for _ in range(5):
            subprocess.run(["/bin/true"], check=True)
        deadline = time.monotonic() + 10
        while (now := exec_counters(base))["aioringbuf_events_delivered_total"] < before + 5:
            assert time.monotonic() < deadline, "the exporter did not count our execs"
            time.sleep(0.01)
        assert now["aioringbuf_events_kernel_dropped_total"] == 0
        assert 0 <= now["aioringbuf_ring_fill_ratio"] < 1
        assert now["aioringbuf_ring_size_bytes"] == 8 << 20
        assert httpx.get(f"{base}/nope", timeout=10).status_code == 404
        assert httpx.post(f"{base}/metrics", timeout=10).status_code == 405
        assert "process_cpu_seconds_total" in httpx.get(f"{base}/metrics", timeout=10).text
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert b"Traceback" not in err
        attached.assert_gone()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_exporter_without_privileges_says_why(kernel) -> None:
    proc = start_exporter(prefix=tuple(AS_NOBODY))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 77, err
    assert err.decode().startswith("aioringbuf exporter: ") and b"Traceback" not in err
    assert b"CAP_BPF" in err


def test_without_prometheus_client_the_error_says_what_to_install() -> None:
    # A fresh interpreter in which importing prometheus_client fails, as when
    # aioringbuf was installed without the [metrics] extra.
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import aioringbuf\n"
        "try:\n"
        "    aioringbuf.register_metrics(object(), name='x')\n"
        "except aioringbuf.MissingDependencyError as exc:\n"
        "    assert isinstance(exc, ImportError) and exc.name == 'prometheus_client'\n"
        "    print(exc)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=child_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert "pip install 'aioringbuf[metrics]'" in r.stdout
