/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* Command header that tests put at the front of a BPF_PROG_TEST_RUN packet
 * for ringgen.bpf.c; the Python tests mirror it. */
#ifndef RINGGEN_H
#define RINGGEN_H

#define RINGGEN_RESERVE (1u << 0)     /* fixed 16-byte record via reserve/submit */
#define RINGGEN_DISCARD_ODD (1u << 1) /* with RESERVE: discard odd sequence numbers */
#define RINGGEN_NO_WAKEUP (1u << 2)   /* submit with BPF_RB_NO_WAKEUP */
#define RINGGEN_FORCE_WAKEUP (1u << 3)

#define RINGGEN_HDR 16
#define RINGGEN_MAX_PAYLOAD 2048

struct ringgen_cmd {
	__u32 flags;
	__u32 pad;
	__u64 aux; /* copied into RESERVE records */
};

/* RESERVE record; OUTPUT records are { __u64 seq; __u8 payload[]; } */
struct ringgen_fixed {
	__u64 seq;
	__u64 aux;
};

#endif
