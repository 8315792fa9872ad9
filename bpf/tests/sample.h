/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* The record of getpgid.bpf.c: DESIGN.md's Sample plus the syscall argument. */
#ifndef SAMPLE_H
#define SAMPLE_H

struct pgid_sample {
	__u64 seq;
	__u64 ts_ns;
	__u32 cpu;
	__u32 pid;
	char comm[16];
	__u64 arg;
};

#endif
