/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * aioringbuf.bpf.h - the kernel half of aioringbuf's drop accounting.
 *
 * The kernel counts nothing when bpf_ringbuf_reserve() fails because the
 * ring is full: the record simply never exists. So every program that feeds
 * aioringbuf declares its ring with AIORINGBUF_RINGBUF(), which adds a
 * per-CPU counter map called <ring>_drops, and writes records only through
 * the helpers below, which bump that counter on failure. The Python side
 * finds the counter by name and reports its sum as stats().kernel_drops, so
 * that   delivered + kernel_drops + queue_drops == produced   holds exactly.
 *
 * Include after vmlinux.h or linux/bpf.h, and bpf/bpf_helpers.h.
 */
#ifndef AIORINGBUF_BPF_H
#define AIORINGBUF_BPF_H

/* A ring buffer map plus its drop counter. size: power of two, multiple of
 * the page size (the kernel refuses anything else with a bare EINVAL). */
#define AIORINGBUF_RINGBUF(name, size)                                         \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_RINGBUF);                            \
		__uint(max_entries, size);                                     \
	} name SEC(".maps");                                                   \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                       \
		__uint(max_entries, 1);                                        \
		__type(key, __u32);                                            \
		__type(value, __u64);                                          \
	} name##_drops SEC(".maps")

/* A perf event array plus its drop counter (for bpf_perf_event_output
 * failures; losses inside the perf ring arrive as PERF_RECORD_LOST). */
#define AIORINGBUF_PERFBUF(name)                                               \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);                   \
		__uint(key_size, sizeof(__u32));                               \
		__uint(value_size, sizeof(__u32));                             \
	} name SEC(".maps");                                                   \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                       \
		__uint(max_entries, 1);                                        \
		__type(key, __u32);                                            \
		__type(value, __u64);                                          \
	} name##_drops SEC(".maps")

static __always_inline void aiorb_count_drop(void *drops)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(drops, &zero);

	/* Atomic although per-CPU: a tracepoint program can be interrupted by
	 * an NMI-context program on the same CPU that drops too. */
	if (n)
		__sync_fetch_and_add(n, 1);
}

static __always_inline void *aiorb_reserve(void *ring, void *drops, __u64 size)
{
	void *rec = bpf_ringbuf_reserve(ring, size, 0);

	if (!rec)
		aiorb_count_drop(drops);
	return rec;
}

static __always_inline long aiorb_output(void *ring, void *drops, void *data,
					 __u64 size, __u64 flags)
{
	long err = bpf_ringbuf_output(ring, data, size, flags);

	if (err)
		aiorb_count_drop(drops);
	return err;
}

static __always_inline long aiorb_perf_output(void *ctx, void *perfbuf,
					      void *drops, void *data,
					      __u64 size)
{
	long err = bpf_perf_event_output(ctx, perfbuf, BPF_F_CURRENT_CPU, data,
					 size);

	if (err)
		aiorb_count_drop(drops);
	return err;
}

/* Reserve a record of `size` bytes in ring `name`; NULL (and one counted
 * drop) when the ring is full. Commit with bpf_ringbuf_submit/discard. */
#define AIORINGBUF_RESERVE(name, size) aiorb_reserve(&name, &name##_drops, size)

/* Copy `size` bytes from `data` into ring `name`, counting a drop on failure. */
#define AIORINGBUF_OUTPUT(name, data, size, flags)                             \
	aiorb_output(&name, &name##_drops, data, size, flags)

/* bpf_perf_event_output on the current CPU, counting a drop on failure. */
#define AIORINGBUF_PERF_OUTPUT(ctx, name, data, size)                          \
	aiorb_perf_output(ctx, &name, &name##_drops, data, size)

#endif /* AIORINGBUF_BPF_H */
