// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* Writes one layout_sample and one layout_tail with known values per run,
 * so the codec's idea of C alignment is checked against the compiler's. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "aioringbuf.bpf.h"
#include "layout.h"

AIORINGBUF_RINGBUF(samples, 4096);
AIORINGBUF_RINGBUF(tails, 4096);

SEC("xdp")
int layout(struct xdp_md *ctx)
{
	struct layout_sample *s;
	struct layout_tail *t;

	s = AIORINGBUF_RESERVE(samples, sizeof(*s));
	if (s) {
		__builtin_memset(s, 0xAA, sizeof(*s)); /* padding is garbage */
		s->u8 = 0xF1;
		s->u16 = 0xF2E3;
		s->u32 = 0xF4E5D6C7;
		s->u64 = 0xF8E9DACBBCAD9E8FULL;
		s->s8 = -2;
		s->s64 = -1234567890123LL;
		s->s16 = -300;
		s->s32 = -70000;
		s->name[0] = 'b';
		s->name[1] = 'p';
		s->name[2] = 'f';
		s->name[3] = 0;
		s->name[4] = 'x'; /* after the NUL: must be ignored */
		s->raw[0] = 0;
		s->raw[1] = 0xFF;
		s->raw[2] = 7;
		s->arr[0] = 1;
		s->arr[1] = 2;
		s->arr[2] = 0xFFFFFFFF;
		s->last = 0x5A;
		bpf_ringbuf_submit(s, 0);
	}

	/* offsetof(data) == 6 and 5 bytes of data: an 11-byte record */
	t = AIORINGBUF_RESERVE(tails, __builtin_offsetof(struct layout_tail, data) + 5);
	if (t) {
		t->kind = 9;
		t->len = 5;
		t->data[0] = 'h';
		t->data[1] = 'e';
		t->data[2] = 'l';
		t->data[3] = 'l';
		t->data[4] = 'o';
		bpf_ringbuf_submit(t, 0);
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
