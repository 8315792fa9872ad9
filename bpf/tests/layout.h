/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* Structs with every kind of field and padding the codec must match; the
 * Python test declares the same layouts as Events and checks each field. */
#ifndef LAYOUT_H
#define LAYOUT_H

struct layout_sample {
	__u8 u8;        /* 0 */
	__u16 u16;      /* 2: padded after u8 */
	__u32 u32;      /* 4 */
	__u64 u64;      /* 8 */
	__s8 s8;        /* 16 */
	__s64 s64;      /* 24: 7 bytes of padding before */
	__s16 s16;      /* 32 */
	__s32 s32;      /* 36 */
	char name[5];   /* 40 */
	__u8 raw[3];    /* 45 */
	__u32 arr[3];   /* 48 */
	__u8 last;      /* 60, then 3 bytes of tail padding: sizeof == 64 */
};

struct layout_tail {
	__u32 kind;     /* 0 */
	__u16 len;      /* 4 */
	__u8 data[];    /* 6 */
};

#endif
