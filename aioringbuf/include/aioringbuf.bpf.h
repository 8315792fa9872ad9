/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
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

/* The per-CPU drop counter `<name>_drops` that both buffer kinds carry. */
#define AIORINGBUF__DROPS(name)                                                \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                       \
		__uint(max_entries, 1);                                        \
		__type(key, __u32);                                            \
		__type(value, __u64);                                          \
	} name##_drops SEC(".maps")

/* A ring buffer map plus its drop counter. size: power of two, multiple of
 * the page size (the kernel refuses anything else with a bare EINVAL). */
#define AIORINGBUF_RINGBUF(name, size)                                         \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_RINGBUF);                            \
		__uint(max_entries, size);                                     \
	} name SEC(".maps");                                                   \
	AIORINGBUF__DROPS(name)

/* A perf event array plus its drop counter (for bpf_perf_event_output
 * failures; losses inside the perf ring arrive as PERF_RECORD_LOST). */
#define AIORINGBUF_PERFBUF(name)                                               \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);                   \
		__uint(key_size, sizeof(__u32));                               \
		__uint(value_size, sizeof(__u32));                             \
	} name SEC(".maps");                                                   \
	AIORINGBUF__DROPS(name)

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

/* -ENOSPC: the perf ring was full. The kernel counts that itself (the
 * PERF_RECORD_LOST records and the event's lost-sample counter that the
 * consumer reads), so counting it here too would count it twice. */
#define AIORB_ENOSPC 28

static __always_inline long aiorb_perf_output(void *ctx, void *perfbuf,
					      void *drops, void *data,
					      __u64 size)
{
	long err = bpf_perf_event_output(ctx, perfbuf, BPF_F_CURRENT_CPU, data,
					 size);

	if (err && err != -AIORB_ENOSPC)
		aiorb_count_drop(drops);
	return err;
}

/* Reserve a record of `size` bytes in ring `name`; NULL (and one counted
 * drop) when the ring is full. Commit with bpf_ringbuf_submit/discard. */
#define AIORINGBUF_RESERVE(name, size) aiorb_reserve(&name, &name##_drops, size)

/* Copy `size` bytes from `data` into ring `name`, counting a drop on failure. */
#define AIORINGBUF_OUTPUT(name, data, size, flags)                             \
	aiorb_output(&name, &name##_drops, data, size, flags)

/* bpf_perf_event_output on the current CPU, counting the failures the perf
 * ring cannot see (no perf event open on this CPU, record too large). */
#define AIORINGBUF_PERF_OUTPUT(ctx, name, data, size)                          \
	aiorb_perf_output(ctx, &name, &name##_drops, data, size)

/*
 * Adaptive wakeups.
 *
 * By default the kernel wakes the consumer for every record committed while
 * the consumer is caught up, which is every record when the consumer keeps
 * up: each wakeup costs the producing CPU an irq_work (about a microsecond,
 * more in a VM) and the consumer a trip through the event loop. The
 * _ADAPTIVE variants below submit with BPF_RB_NO_WAKEUP, and force a
 * wakeup only
 *
 *   - when the data waiting in the ring crosses a multiple of `bytes`
 *     (AIORINGBUF_WAKEUP_BYTES, at most a quarter of the ring), so a
 *     consumer wakes once per `bytes` of backlog, however fast it comes; or
 *   - when no wakeup was asked for in `delay_ns` (AIORINGBUF_WAKEUP_DELAY_NS),
 *     so at low rates every record still wakes the consumer at once, and
 *     at high rates nothing waits much longer than `delay_ns` as long as
 *     records keep coming.
 *
 * The last records of a burst, below the threshold and with nothing after
 * them, are not announced: give the stream a flush_interval (e.g.
 * flush_interval=0.001), which bounds their latency. The trade-off: the
 * producer keeps nearly its full speed and the consumer handles records
 * in batches, for up to delay_ns (or flush_interval, for the tail of a
 * burst) of added latency.
 *
 * Declare the ring with AIORINGBUF_RINGBUF_ADAPTIVE, which adds a one-entry
 * <name>_wakeup array: { bytes, delay_ns, last_ns }. Zero bytes or delay_ns
 * mean the compile-time defaults; user space may write other values at run
 * time (map update of key 0). Crossing a multiple of `bytes` (rather than
 * being above it) keeps a lagging consumer from being woken for every
 * record; should two CPUs race past the same multiple and neither see it,
 * the next multiple (or the delay) wakes the consumer.
 */
#ifndef AIORINGBUF_WAKEUP_BYTES
#define AIORINGBUF_WAKEUP_BYTES (16 * 1024)
#endif
#ifndef AIORINGBUF_WAKEUP_DELAY_NS
#define AIORINGBUF_WAKEUP_DELAY_NS (500 * 1000)
#endif

struct aiorb_wakeup {
	__u64 bytes;    /* wake per this much backlog; 0: AIORINGBUF_WAKEUP_BYTES */
	__u64 delay_ns; /* wake if none for this long; 0: AIORINGBUF_WAKEUP_DELAY_NS */
	__u64 last_ns;  /* when a wakeup was last asked for (racy by design) */
};

#define AIORINGBUF_RINGBUF_ADAPTIVE(name, size)                                \
	AIORINGBUF_RINGBUF(name, size);                                        \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_ARRAY);                              \
		__uint(max_entries, 1);                                        \
		__type(key, __u32);                                            \
		__type(value, struct aiorb_wakeup);                            \
	} name##_wakeup SEC(".maps")

/* Ring bytes a record of `size` sample bytes takes (BPF_RINGBUF_HDR_SZ is 8). */
#define AIORB_SPAN(size) ((((__u64)(size)) + 8 + 7) & ~7ULL)

/* The wakeup flag for a record that moves the backlog from `before` to
 * `after`, at time `now` (bpf_ktime_get_ns()). */
static __always_inline __u64 aiorb_wakeup_flag(void *ring, void *state,
					       __u64 before, __u64 after, __u64 now)
{
	__u32 zero = 0;
	struct aiorb_wakeup *w = bpf_map_lookup_elem(state, &zero);
	__u64 bytes, cap, delay;

	if (!w)
		return 0; /* cannot happen; fall back to the kernel's own rule */
	bytes = w->bytes ? w->bytes : AIORINGBUF_WAKEUP_BYTES;
	cap = bpf_ringbuf_query(ring, BPF_RB_RING_SIZE) / 4;
	if (bytes > cap)
		bytes = cap;
	if (bytes == 0)
		bytes = 1;
	/* Crossing a multiple of bytes: for a power of two (the default, and
	 * every cap), the two positions differ in a bit at or above it, with
	 * no division (a 64-bit divide costs the producer some 8% of its rate). */
	if ((bytes & (bytes - 1)) == 0 ? (before ^ after) >= bytes
				       : before / bytes != after / bytes)
		goto wake;
	delay = w->delay_ns ? w->delay_ns : AIORINGBUF_WAKEUP_DELAY_NS;
	if (now - w->last_ns >= delay)
		goto wake;
	return BPF_RB_NO_WAKEUP;
wake:
	w->last_ns = now;
	return BPF_RB_FORCE_WAKEUP;
}

static __always_inline __u64 aiorb_submit_flag(void *ring, void *state, __u64 size,
					       __u64 now)
{
	/* Queried after the reserve: the backlog already includes this record. */
	__u64 after = bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA);
	__u64 span = AIORB_SPAN(size);

	return aiorb_wakeup_flag(ring, state, after > span ? after - span : 0, after, now);
}

static __always_inline long aiorb_output_adaptive(void *ring, void *drops, void *state,
						  void *data, __u64 size, __u64 now)
{
	__u64 before = bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA);

	return aiorb_output(ring, drops, data, size,
			    aiorb_wakeup_flag(ring, state, before, before + AIORB_SPAN(size), now));
}

/* Submit record `rec` of `size` bytes (as reserved) to adaptive ring `name`. */
#define AIORINGBUF_SUBMIT_ADAPTIVE(name, rec, size)                            \
	AIORINGBUF_SUBMIT_ADAPTIVE_AT(name, rec, size, bpf_ktime_get_ns())

/* AIORINGBUF_OUTPUT with adaptive wakeups, for a ring declared _ADAPTIVE. */
#define AIORINGBUF_OUTPUT_ADAPTIVE(name, data, size)                           \
	AIORINGBUF_OUTPUT_ADAPTIVE_AT(name, data, size, bpf_ktime_get_ns())

/* The same, for a program that has read the clock already (a record's
 * timestamp): `now_ns` is its bpf_ktime_get_ns() value, taken just before.
 * The delay rule needs the time of every record, and a second clock read
 * per record costs the producer several percent of its rate. */
#define AIORINGBUF_SUBMIT_ADAPTIVE_AT(name, rec, size, now_ns)                 \
	bpf_ringbuf_submit(rec, aiorb_submit_flag(&name, &name##_wakeup, size, now_ns))

#define AIORINGBUF_OUTPUT_ADAPTIVE_AT(name, data, size, now_ns)                \
	aiorb_output_adaptive(&name, &name##_drops, &name##_wakeup, data, size, now_ns)

#endif /* AIORINGBUF_BPF_H */
