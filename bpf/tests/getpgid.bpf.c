// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* Turns os.getpgid(n) in the target process into a record carrying n:
 * the tests' way to make the kernel produce records from real syscalls. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "aioringbuf.bpf.h"
#include "sample.h"

AIORINGBUF_RINGBUF(events, 256 * 1024);

/* [0]: tgid to trace (0: nobody), [1]: records attempted */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} control SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpgid")
int on_getpgid(struct trace_event_raw_sys_enter *ctx)
{
	__u32 k_target = 0, k_produced = 1;
	__u64 *target, *produced, seq;
	struct pgid_sample *s;

	target = bpf_map_lookup_elem(&control, &k_target);
	produced = bpf_map_lookup_elem(&control, &k_produced);
	if (!target || !produced || *target != (bpf_get_current_pid_tgid() >> 32))
		return 0;
	seq = __sync_fetch_and_add(produced, 1);
	s = AIORINGBUF_RESERVE(events, sizeof(*s));
	if (!s)
		return 0;
	s->seq = seq;
	s->ts_ns = bpf_ktime_get_ns();
	s->cpu = bpf_get_smp_processor_id();
	s->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(s->comm, sizeof(s->comm));
	s->arg = ctx->args[0];
	bpf_ringbuf_submit(s, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
