/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* The benchmark's record and control slots, shared by bench.bpf.c, the C
 * peers and (mirrored) the Python consumers and BCC's copy of the program. */
#ifndef BENCH_H
#define BENCH_H

/* 32 bytes: what every consumer decodes. */
struct bench_rec {
	__u64 seq;   /* per-run sequence number */
	__u64 ts_ns; /* bpf_ktime_get_ns() just before the record is committed */
	__u32 cpu;
	__u32 pid;
	__u64 arg;   /* getpgid's argument */
};

enum bench_mode {
	BENCH_RING = 0,          /* ring buffer, the kernel's default wakeups */
	BENCH_RING_ADAPTIVE = 1, /* ring buffer, AIORINGBUF_SUBMIT_ADAPTIVE */
	BENCH_PERF = 2,          /* perf event array, BPF_F_CURRENT_CPU */
	BENCH_RING_EXEC = 3,     /* ring buffer, exec_events()-shaped variable records */
};

/* An exec_events()-shaped record: a fixed header, then NUL-separated
 * strings (argv) of 64, 128, 192 or 256 bytes by seq: 120..312 bytes,
 * about what a typical exec record takes. */
#define BENCH_EXEC_TAIL 256
struct bench_exec {
	struct bench_rec rec;
	char comm[16];
	__u32 argc;
	__u32 flags;
	char argv[BENCH_EXEC_TAIL];
};
#define BENCH_EXEC_FIXED (sizeof(struct bench_exec) - BENCH_EXEC_TAIL)

enum bench_control {
	BENCH_TARGET = 0,   /* the producer's tgid (0: nobody) */
	BENCH_MODE = 1,     /* enum bench_mode */
	BENCH_PRODUCED = 2, /* records attempted */
};

#endif
