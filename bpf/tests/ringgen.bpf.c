// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* A record generator driven by BPF_PROG_TEST_RUN: each run of the program
 * tries to write one record numbered by a global sequence counter, so a
 * test can produce any number of records (repeat=N) of any size and content
 * (the packet after the command header) at kernel speed. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "aioringbuf.bpf.h"
#include "ringgen.h"

AIORINGBUF_RINGBUF(events, 64 * 1024);

/* [0]: records attempted (produced) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct scratch_buf {
	__u64 seq;
	__u8 payload[RINGGEN_MAX_PAYLOAD];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch_buf);
} scratch SEC(".maps");

SEC("xdp")
int ringgen(struct xdp_md *ctx)
{
	struct ringgen_cmd cmd;
	__u32 zero = 0;
	__u64 *produced, seq, wake = 0;
	struct scratch_buf *buf;
	long n;

	if (bpf_xdp_load_bytes(ctx, 0, &cmd, sizeof(cmd)))
		return XDP_ABORTED;
	produced = bpf_map_lookup_elem(&counters, &zero);
	if (!produced)
		return XDP_ABORTED;
	seq = __sync_fetch_and_add(produced, 1);
	if (cmd.flags & RINGGEN_NO_WAKEUP)
		wake = BPF_RB_NO_WAKEUP;
	else if (cmd.flags & RINGGEN_FORCE_WAKEUP)
		wake = BPF_RB_FORCE_WAKEUP;

	if (cmd.flags & RINGGEN_RESERVE) {
		struct ringgen_fixed *rec;

		rec = AIORINGBUF_RESERVE(events, sizeof(*rec));
		if (!rec)
			return XDP_PASS;
		rec->seq = seq;
		rec->aux = cmd.aux;
		if ((cmd.flags & RINGGEN_DISCARD_ODD) && (seq & 1))
			bpf_ringbuf_discard(rec, wake);
		else
			bpf_ringbuf_submit(rec, wake);
		return XDP_PASS;
	}

	buf = bpf_map_lookup_elem(&scratch, &zero);
	if (!buf)
		return XDP_ABORTED;
	buf->seq = seq;
	n = (long)(ctx->data_end - ctx->data) - RINGGEN_HDR;
	if (n < 0)
		n = 0;
	if (n > RINGGEN_MAX_PAYLOAD)
		n = RINGGEN_MAX_PAYLOAD;
	if (n > 0 && bpf_xdp_load_bytes(ctx, RINGGEN_HDR, buf->payload, n))
		return XDP_ABORTED;
	AIORINGBUF_OUTPUT(events, buf, sizeof(buf->seq) + n, wake);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
