// SPDX-License-Identifier: MIT
/* The libbpf C peers: ring_buffer__poll and perf_buffer__poll over the same
 * bench.bpf.o, with the same protocol as consumers/common.py:
 *
 *   libbpf_consumer OBJ ring|perf live|drain|latency PRODUCER_PID CPU SIZE
 *
 * SIZE: ring bytes (ring) or per-CPU bytes (perf). Loads and attaches the
 * object, aims it at PRODUCER_PID, prints "ready", then: live/latency
 * consume until no record came for 0.5 s after the first one; drain waits
 * for a line on stdin, then consumes every record produced so far. Prints
 * one JSON line (counts, rusage CPU seconds, wall seconds, latencies). */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/types.h>
#include "../bpf/bench.h"

static unsigned long long delivered;
static long long *lat;
static size_t nlat, caplat;
static int want_latency;

static unsigned long long mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static double secs(struct timeval tv)
{
	return tv.tv_sec + tv.tv_usec * 1e-6;
}

static void on_record(const struct bench_rec *r)
{
	delivered++;
	if (want_latency && nlat < caplat)
		lat[nlat++] = (long long)(mono_ns() - r->ts_ns);
}

static int ring_cb(void *ctx, void *data, size_t size)
{
	on_record(data);
	return 0;
}

static void perf_cb(void *ctx, int cpu, void *data, __u32 size)
{
	on_record(data);
}

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return (x > y) - (x < y);
}

static long long pct(double p)
{
	size_t i;

	if (!nlat)
		return -1;
	i = (size_t)(p * (nlat - 1) + 0.5);
	return lat[i];
}

static unsigned long long control_get(int fd, __u32 key)
{
	__u64 v = 0;

	bpf_map_lookup_elem(fd, &key, &v);
	return v;
}

static void control_set(int fd, __u32 key, __u64 v)
{
	bpf_map_update_elem(fd, &key, &v, BPF_ANY);
}

int main(int argc, char **argv)
{
	struct ring_buffer *rb = NULL;
	struct perf_buffer *pb = NULL;
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_link *link;
	struct rusage ru0, ru1;
	unsigned long long target = 0, last = 0;
	double t0, t1, idle_since = 0;
	int ctl, perf, adaptive, exec_shaped, drain, err;
	cpu_set_t set;
	char line[64];
	long size;

	if (argc < 7) {
		fprintf(stderr, "usage: libbpf_consumer OBJ ring|ring-adaptive|ring-exec|perf "
				"live|drain|latency PID CPU SIZE\n");
		return 2;
	}
	perf = !strcmp(argv[2], "perf");
	/* ring-adaptive: the program submits with AIORINGBUF_SUBMIT_ADAPTIVE and
	 * the poll timeout (5 ms) is the flush interval for the tail. */
	adaptive = !strcmp(argv[2], "ring-adaptive");
	exec_shaped = !strcmp(argv[2], "ring-exec"); /* variable-length records */
	drain = !strcmp(argv[3], "drain");
	want_latency = !strcmp(argv[3], "latency");
	size = atol(argv[6]);
	CPU_ZERO(&set);
	CPU_SET(atoi(argv[5]), &set);
	sched_setaffinity(0, sizeof(set), &set);
	if (want_latency) {
		caplat = 1 << 24;
		lat = malloc(caplat * sizeof(*lat));
	}

	obj = bpf_object__open_file(argv[1], NULL);
	if (!obj) {
		fprintf(stderr, "open %s failed\n", argv[1]);
		return 1;
	}
	if (!perf)
		bpf_map__set_max_entries(bpf_object__find_map_by_name(obj, "ring"), size);
	if ((err = bpf_object__load(obj))) {
		fprintf(stderr, "load failed: %d\n", err);
		return 1;
	}
	prog = bpf_object__find_program_by_name(obj, "on_getpgid");
	link = bpf_program__attach(prog);
	if (!link) {
		fprintf(stderr, "attach failed\n");
		return 1;
	}
	ctl = bpf_map__fd(bpf_object__find_map_by_name(obj, "control"));
	control_set(ctl, BENCH_MODE, perf ? BENCH_PERF : adaptive ? BENCH_RING_ADAPTIVE :
		    exec_shaped ? BENCH_RING_EXEC : BENCH_RING);
	control_set(ctl, BENCH_TARGET, atoll(argv[4]));
	if (perf)
		pb = perf_buffer__new(bpf_map__fd(bpf_object__find_map_by_name(obj, "perf")),
				      size / getpagesize(), perf_cb, NULL, NULL, NULL);
	else
		rb = ring_buffer__new(bpf_map__fd(bpf_object__find_map_by_name(obj, "ring")),
				      ring_cb, NULL, NULL);
	if (!pb && !rb) {
		fprintf(stderr, "buffer setup failed\n");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	if (drain) {
		if (!fgets(line, sizeof(line), stdin))
			return 1;
		target = control_get(ctl, BENCH_PRODUCED);
	}
	getrusage(RUSAGE_SELF, &ru0);
	t0 = mono_ns() * 1e-9;
	for (;;) {
		err = perf ? perf_buffer__poll(pb, 100) : ring_buffer__poll(rb, adaptive ? 5 : 100);
		/* epoll only reports a ring the kernel woke: below the adaptive
		 * threshold nothing does, so a timeout reads the ring directly
		 * (what flush_interval does in aioringbuf). */
		if (adaptive && err == 0)
			err = ring_buffer__consume(rb);
		if (err < 0 && err != -EINTR) {
			fprintf(stderr, "poll: %d\n", err);
			break;
		}
		if (drain) {
			if (delivered >= target)
				break;
		}
		if (delivered != last || !delivered) {
			last = delivered;
			idle_since = mono_ns() * 1e-9;
		} else if (mono_ns() * 1e-9 - idle_since > 0.5) {
			break;
		}
	}
	t1 = (drain ? mono_ns() * 1e-9 : idle_since);
	getrusage(RUSAGE_SELF, &ru1);
	if (want_latency)
		qsort(lat, nlat, sizeof(*lat), cmp_ll);
	printf("{\"delivered\": %llu, \"produced\": %llu, \"user_s\": %.6f, \"sys_s\": %.6f, "
	       "\"wall_s\": %.6f, \"lat_ns\": [%lld, %lld, %lld], \"python\": null}\n",
	       delivered, control_get(ctl, BENCH_PRODUCED), secs(ru1.ru_utime) - secs(ru0.ru_utime),
	       secs(ru1.ru_stime) - secs(ru0.ru_stime), t1 - t0, pct(0.5), pct(0.99), pct(0.999));
	fflush(stdout);
	ring_buffer__free(rb);
	perf_buffer__free(pb);
	bpf_link__destroy(link);
	bpf_object__close(obj);
	return 0;
}
