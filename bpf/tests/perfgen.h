/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* The record of perfgen.bpf.c; the Python tests mirror it. Test-run packets
 * start with the same 16-byte command header as ringgen's (ringgen.h). */
#ifndef PERFGEN_H
#define PERFGEN_H

#define PERFGEN_HDR 16
#define PERFGEN_MAX_PAYLOAD 2048

struct perfgen_rec {
	__u64 seq;
	__u32 cpu;
	__u32 len; /* payload bytes: the kernel pads perf samples, so say how many */
	__u8 payload[];
};

#endif
