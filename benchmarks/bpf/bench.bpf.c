// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* The one program every consumer in the benchmark reads: the producer's
 * getpgid(n) becomes a 32-byte bench_rec carrying n, written to a ring
 * buffer (default or adaptive wakeups) or to a perf event array, as
 * control[BENCH_MODE] says. BCC cannot load this object, so
 * consumers/bcc_consumer.py carries the same program in BCC's dialect. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "aioringbuf.bpf.h"
#include "bench.h"

AIORINGBUF_RINGBUF_ADAPTIVE(ring, 32 << 20);
AIORINGBUF_PERFBUF(perf);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} control SEC(".maps");

/* The record under construction in BENCH_RING_EXEC mode (its strings are
 * written once: only the header changes per record). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_exec);
} exec_scratch SEC(".maps");

static __always_inline __u64 *slot(__u32 k)
{
	return bpf_map_lookup_elem(&control, &k);
}

SEC("tracepoint/syscalls/sys_enter_getpgid")
int on_getpgid(struct trace_event_raw_sys_enter *ctx)
{
	__u64 *target = slot(BENCH_TARGET), *mode = slot(BENCH_MODE);
	__u64 *produced = slot(BENCH_PRODUCED);
	struct bench_rec *r, rec;

	if (!target || !mode || !produced || *target != (bpf_get_current_pid_tgid() >> 32))
		return 0;
	rec.seq = __sync_fetch_and_add(produced, 1);
	rec.cpu = bpf_get_smp_processor_id();
	rec.pid = *target;
	rec.arg = ctx->args[0];
	if (*mode == BENCH_PERF) {
		rec.ts_ns = bpf_ktime_get_ns();
		AIORINGBUF_PERF_OUTPUT(ctx, perf, &rec, sizeof(rec));
		return 0;
	}
	if (*mode == BENCH_RING_EXEC) {
		__u32 zero = 0, len;
		struct bench_exec *x = bpf_map_lookup_elem(&exec_scratch, &zero);

		if (!x)
			return 0;
		if (!x->argc) {
			for (int i = 0; i < BENCH_EXEC_TAIL; i++)
				x->argv[i] = (i & 7) == 7 ? 0 : 'a' + (i & 7);
			__builtin_memcpy(x->comm, "bench-exec", 11);
			x->argc = BENCH_EXEC_TAIL / 8;
		}
		len = BENCH_EXEC_FIXED + 64 * (1 + (rec.seq & 3));
		rec.ts_ns = bpf_ktime_get_ns();
		x->rec = rec;
		AIORINGBUF_OUTPUT(ring, x, len, 0);
		return 0;
	}
	r = AIORINGBUF_RESERVE(ring, sizeof(*r));
	if (!r)
		return 0;
	rec.ts_ns = bpf_ktime_get_ns();
	*r = rec;
	if (*mode == BENCH_RING_ADAPTIVE)  /* the record's timestamp is the clock read */
		AIORINGBUF_SUBMIT_ADAPTIVE_AT(ring, r, sizeof(*r), rec.ts_ns);
	else
		bpf_ringbuf_submit(r, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
