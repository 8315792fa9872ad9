// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* ringgen with adaptive wakeups: each BPF_PROG_TEST_RUN writes one
 * { u64 seq; u64 aux } record through AIORINGBUF_SUBMIT_ADAPTIVE (or, with
 * the packet's flags bit 0 set, AIORINGBUF_OUTPUT_ADAPTIVE; bit 1: the
 * SUBMIT_ADAPTIVE_AT form), so a test can
 * watch when the consumer is and is not woken. The threshold and delay are
 * set at run time in events_wakeup. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "aioringbuf.bpf.h"
#include "ringgen.h"

AIORINGBUF_RINGBUF_ADAPTIVE(events, 64 * 1024);

/* [0]: records attempted (produced) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

SEC("xdp")
int adaptive(struct xdp_md *ctx)
{
	struct ringgen_cmd cmd;
	struct ringgen_fixed *rec, out;
	__u32 zero = 0;
	__u64 *produced;

	if (bpf_xdp_load_bytes(ctx, 0, &cmd, sizeof(cmd)))
		return XDP_ABORTED;
	produced = bpf_map_lookup_elem(&counters, &zero);
	if (!produced)
		return XDP_ABORTED;
	out.seq = __sync_fetch_and_add(produced, 1);
	out.aux = cmd.aux;
	if (cmd.flags & 1) {
		AIORINGBUF_OUTPUT_ADAPTIVE(events, &out, sizeof(out));
		return XDP_PASS;
	}
	rec = AIORINGBUF_RESERVE(events, sizeof(*rec));
	if (!rec)
		return XDP_PASS;
	*rec = out;
	if (cmd.flags & 2)  /* the _AT form, with a clock read of the program's own */
		AIORINGBUF_SUBMIT_ADAPTIVE_AT(events, rec, sizeof(*rec), bpf_ktime_get_ns());
	else
		AIORINGBUF_SUBMIT_ADAPTIVE(events, rec, sizeof(*rec));
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
