// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* One fixed-size record per context switch on the machine: the live stream
 * of examples/switch_histogram.py (columns straight from the ring). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "aioringbuf.bpf.h"

AIORINGBUF_RINGBUF(events, 4 * 1024 * 1024);

struct switch_event {
	__u64 ts_ns;
	__u32 cpu;
	__u32 prev_pid;
	__u32 next_pid;
	__u32 prev_running; /* the task left the CPU runnable (preempted) */
	char next_comm[16];
};

SEC("tracepoint/sched/sched_switch")
int on_switch(struct trace_event_raw_sched_switch *ctx)
{
	struct switch_event *e = AIORINGBUF_RESERVE(events, sizeof(*e));

	if (!e)
		return 0;
	e->ts_ns = bpf_ktime_get_ns();
	e->cpu = bpf_get_smp_processor_id();
	e->prev_pid = ctx->prev_pid;
	e->next_pid = ctx->next_pid;
	e->prev_running = ctx->prev_state == 0;
	bpf_probe_read_kernel(e->next_comm, sizeof(e->next_comm), ctx->next_comm);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
