// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* ringgen for perf buffers: each BPF_PROG_TEST_RUN of the program tries to
 * write one perfgen_rec, numbered by a global sequence counter, with the
 * packet (after the command header) as its payload, into the perf ring of
 * the CPU it runs on. A test run stays on the CPU of the calling thread,
 * so a test chooses the CPU with os.sched_setaffinity. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "aioringbuf.bpf.h"
#include "perfgen.h"

AIORINGBUF_PERFBUF(events);

/* [0]: records attempted (produced) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* [0]: records attempted on this CPU, so that a thread pinned to a CPU can
 * count its own runs while another CPU produces too */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} cpu_produced SEC(".maps");

/* A perfgen_rec with room for the largest payload. */
struct scratch_buf {
	__u64 seq;
	__u32 cpu;
	__u32 len;
	__u8 payload[PERFGEN_MAX_PAYLOAD];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch_buf);
} scratch SEC(".maps");

SEC("xdp")
int perfgen(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *produced;
	struct scratch_buf *buf;
	long n;

	__u64 *mine = bpf_map_lookup_elem(&cpu_produced, &zero);

	produced = bpf_map_lookup_elem(&counters, &zero);
	buf = bpf_map_lookup_elem(&scratch, &zero);
	if (!produced || !buf || !mine)
		return XDP_ABORTED;
	*mine += 1;
	n = (long)(ctx->data_end - ctx->data) - PERFGEN_HDR;
	if (n < 0)
		n = 0;
	if (n > PERFGEN_MAX_PAYLOAD)
		n = PERFGEN_MAX_PAYLOAD;
	if (n > 0 && bpf_xdp_load_bytes(ctx, PERFGEN_HDR, buf->payload, n))
		return XDP_ABORTED;
	buf->seq = __sync_fetch_and_add(produced, 1);
	buf->cpu = bpf_get_smp_processor_id();
	buf->len = n;
	AIORINGBUF_PERF_OUTPUT(ctx, events, buf, sizeof(struct perfgen_rec) + n);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
