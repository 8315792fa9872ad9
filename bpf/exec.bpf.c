// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * exec.bpf.c - one record per execve()/execveat() attempt: who, what, result.
 *
 * The kernel half of aioringbuf.exec_events() and `aioringbuf exec`.
 *
 * Why enter and exit are paired: the file name and argv live in the caller's
 * memory, which a successful exec replaces, so they must be read on syscall
 * entry; the result (0 or -errno) is known only on syscall exit. Entry
 * therefore parks a complete record in the `inflight` hash, keyed by thread
 * id, and exit fills in the result, writes the record to the ring and
 * forgets the entry. Only syscalls/ and sched/ tracepoints are used: this
 * kernel has no kprobes.
 *
 * Why sched_process_exec too: an exec from a thread other than the main
 * thread makes that thread the leader and gives it the tgid as its pid
 * (de_thread), so syscall exit runs with another thread id than entry did.
 * sched_process_exec fires in between and knows both ids: it moves the entry.
 *
 * Why records are variable length: a header, then the file name, then the
 * arguments, each exactly as long as it is. `ls` costs ~100 bytes of ring
 * space, not the 8 KiB the bounds allow.
 *
 * Accounting (DESIGN.md: delivered + kernel_drops + queue_drops == produced,
 * where produced = exec attempts seen at entry): every attempt whose record
 * is lost is counted once in events_drops, which aioringbuf reports as
 * stats().kernel_drops, whether the ring was full at exit or the record
 * could not be parked at entry. The second cause is also counted on its own
 * in exec_enter_drops, so a user can tell a slow consumer (ring full) from
 * too many execs in flight at once (inflight full).
 *
 * Known gaps: 32-bit (compat) execs do not fire the syscalls/ tracepoints,
 * and an exec in flight when the program is attached or detached has no
 * entry or no exit: neither is reported nor counted.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "aioringbuf.bpf.h"

#define EXEC_FILENAME_MAX 4096 /* PATH_MAX, NUL included: longer names fail */
#define EXEC_ARGS_MAX 4096     /* bytes of argv kept, each string's NUL included */
#define EXEC_MAX_ARGS 128      /* argv strings kept, if they fit in EXEC_ARGS_MAX */
#define EXEC_BUF_SIZE 16384    /* power of two: record sizes are masked with it */
#define EXEC_INFLIGHT_MAX 10240

#define EXEC_F_ARGS_TRUNCATED 1     /* argv had more than was kept */
#define EXEC_F_FILENAME_TRUNCATED 2 /* name longer than PATH_MAX (exec fails) */
#define EXEC_F_EXECVEAT 4           /* execveat(2), not execve(2) */

/* The record header; aioringbuf/_exec.py mirrors it (struct format
 * "<QQIIIIIiiIHHHH16s"). filename_len bytes of file name (NUL included),
 * then args_len bytes of NUL-terminated argv strings, follow it. */
struct exec_event {
	__u64 ts_ns;     /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) at syscall exit */
	__u64 cgroup_id; /* cgroup v2 id of the caller */
	__u32 pid;       /* tgid of the caller */
	__u32 tid;       /* the calling thread (differs from pid: a thread exec'd) */
	__u32 ppid;      /* tgid of the real parent */
	__u32 uid;       /* real uid and gid of the caller */
	__u32 gid;
	__s32 ret;       /* 0 or -errno */
	__s32 dirfd;     /* execveat's dirfd; AT_FDCWD for execve */
	__u32 at_flags;  /* execveat's flags (AT_EMPTY_PATH, ...); 0 for execve */
	__u16 filename_len;
	__u16 args_len;
	__u16 argc;      /* argv strings kept */
	__u16 flags;     /* EXEC_F_* */
	char comm[16];   /* at exit: the new program's name when the exec succeeded */
};

/* Room for the worst case the verifier sees when it checks an argv read:
 * the furthest start (header + name + almost all argv) plus the largest read. */
struct exec_buf {
	struct exec_event hdr;
	__u8 data[EXEC_BUF_SIZE - sizeof(struct exec_event)];
};

_Static_assert(sizeof(struct exec_event) == 72, "mirrored in aioringbuf/_exec.py");
_Static_assert(sizeof(struct exec_event) + EXEC_FILENAME_MAX + 2 * EXEC_ARGS_MAX <=
		       EXEC_BUF_SIZE,
	       "exec_buf must hold the verifier's worst case");

/* 8 MiB: about 60,000 typical records, so a burst of execs waits for a busy
 * consumer instead of being dropped. exec_events(ring_size=...) changes it. */
AIORINGBUF_RINGBUF(events, 8 << 20);

/* One record under construction per thread inside execve. No preallocation:
 * 10240 entries of 16 KiB would pin 160 MiB; allocated on demand, the map
 * costs memory only for the execs actually in flight. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EXEC_INFLIGHT_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct exec_buf);
} inflight SEC(".maps");

/* Where entry builds the record: too big for the 512-byte BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_buf);
} scratch SEC(".maps");

/* Attempts lost because `inflight` was full (also counted in events_drops). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} exec_enter_drops SEC(".maps");

/* Is the user string at `s` longer than the n - 1 bytes a read of size n
 * kept? bpf_probe_read_user_str returns n both when the string fills the
 * buffer exactly and when it was cut; the byte at s[n - 1] tells which. */
static __always_inline bool was_cut(const char *s, long n)
{
	char c = 0;

	bpf_probe_read_user(&c, 1, s + n - 1);
	return c != 0;
}

static __always_inline void read_filename(struct exec_buf *b, const char *filename)
{
	long n = bpf_probe_read_user_str(b->data, EXEC_FILENAME_MAX, filename);

	if (n < 0)
		n = 0; /* unreadable: the exec itself fails with -EFAULT */
	if (n > EXEC_FILENAME_MAX)
		n = EXEC_FILENAME_MAX;
	if (n == EXEC_FILENAME_MAX && was_cut(filename, n))
		b->hdr.flags |= EXEC_F_FILENAME_TRUNCATED;
	b->hdr.filename_len = n;
}

/* Copy argv strings after the file name until EXEC_MAX_ARGS strings or
 * EXEC_ARGS_MAX bytes; flag the record when anything was left out. */
static __always_inline void read_args(struct exec_buf *b, const char *const *argv)
{
	/* 64-bit on purpose: with __u32, clang checks a zero-extended copy and
	 * the verifier never learns the bound of the register it then uses. */
	__u64 start = b->hdr.filename_len, len = 0, argc = 0;
	const char *arg = NULL;
	int i;

	if (start > EXEC_FILENAME_MAX)
		start = EXEC_FILENAME_MAX; /* already true: says so to the verifier */
	for (i = 0; i < EXEC_MAX_ARGS; i++) {
		long n;
		__u64 room;

		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
			goto done;
		if (len >= EXEC_ARGS_MAX) {
			b->hdr.flags |= EXEC_F_ARGS_TRUNCATED;
			goto done;
		}
		/* barrier_var: keep clang from folding start + len into one
		 * register, which would lose the bound of `len` checked above. */
		barrier_var(len);
		room = EXEC_ARGS_MAX - len;
		n = bpf_probe_read_user_str(&b->data[start + len], room, arg);
		if (n <= 0) {
			/* unreadable argv string: the exec fails with -EFAULT */
			b->hdr.flags |= EXEC_F_ARGS_TRUNCATED;
			goto done;
		}
		if (n > room)
			n = room;
		len += n;
		argc++;
		if (n == room && was_cut(arg, n)) {
			b->hdr.flags |= EXEC_F_ARGS_TRUNCATED;
			goto done;
		}
	}
	/* EXEC_MAX_ARGS kept: was there another one? */
	if (!bpf_probe_read_user(&arg, sizeof(arg), &argv[EXEC_MAX_ARGS]) && arg)
		b->hdr.flags |= EXEC_F_ARGS_TRUNCATED;
done:
	b->hdr.args_len = len;
	b->hdr.argc = argc;
}

static __always_inline int on_enter(int dirfd, const char *filename,
				    const char *const *argv, __u32 at_flags, __u16 flags)
{
	__u64 id = bpf_get_current_pid_tgid(), ugid = bpf_get_current_uid_gid();
	__u32 tid = (__u32)id, zero = 0;
	struct task_struct *task;
	struct exec_buf *b;

	b = bpf_map_lookup_elem(&scratch, &zero);
	if (!b) {
		aiorb_count_drop(&events_drops); /* cannot happen; never lose silently */
		return 0;
	}
	task = (struct task_struct *)bpf_get_current_task();
	b->hdr.ts_ns = 0;
	b->hdr.cgroup_id = bpf_get_current_cgroup_id();
	b->hdr.pid = id >> 32;
	b->hdr.tid = tid;
	b->hdr.ppid = BPF_CORE_READ(task, real_parent, tgid);
	b->hdr.uid = (__u32)ugid;
	b->hdr.gid = ugid >> 32;
	b->hdr.ret = 0;
	b->hdr.dirfd = dirfd;
	b->hdr.at_flags = at_flags;
	b->hdr.flags = flags;
	read_filename(b, filename);
	read_args(b, argv);
	/* BPF_ANY: an entry still under this tid belongs to an exec whose exit
	 * was never seen (it started before we attached); it is stale. */
	if (bpf_map_update_elem(&inflight, &tid, b, BPF_ANY)) {
		aiorb_count_drop(&events_drops);
		aiorb_count_drop(&exec_enter_drops);
	}
	return 0;
}

static __always_inline int on_exit(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct exec_buf *b;
	__u64 size;

	b = bpf_map_lookup_elem(&inflight, &tid);
	if (!b)
		return 0; /* entered before we attached, or lost at entry (counted) */
	b->hdr.ts_ns = bpf_ktime_get_ns();
	b->hdr.ret = ret;
	bpf_get_current_comm(b->hdr.comm, sizeof(b->hdr.comm));
	size = sizeof(b->hdr) + b->hdr.filename_len + b->hdr.args_len;
	/* At most 72 + 4096 + 4096 already; the mask proves the bound to the
	 * verifier, which cannot know what entry stored in the map. */
	size &= EXEC_BUF_SIZE - 1;
	AIORINGBUF_OUTPUT(events, b, size, 0);
	bpf_map_delete_elem(&inflight, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int on_execve_enter(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(-100 /* AT_FDCWD */, (const char *)ctx->args[0],
			(const char *const *)ctx->args[1], 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_execveat")
int on_execveat_enter(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter((int)ctx->args[0], (const char *)ctx->args[1],
			(const char *const *)ctx->args[2], (__u32)ctx->args[4],
			EXEC_F_EXECVEAT);
}

SEC("tracepoint/syscalls/sys_exit_execve")
int on_execve_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int on_execveat_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx->ret);
}

/* A successful exec from a non-leader thread: the thread now has the
 * leader's pid, and its syscall exit will look the entry up under it. */
SEC("tracepoint/sched/sched_process_exec")
int on_process_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	__u32 old_tid = ctx->old_pid, new_tid = ctx->pid;
	struct exec_buf *b;

	if (old_tid == new_tid)
		return 0;
	b = bpf_map_lookup_elem(&inflight, &old_tid);
	if (!b)
		return 0;
	/* Insert before deleting: deleting first could hand `b`'s memory to
	 * the very allocation the insert makes. */
	if (bpf_map_update_elem(&inflight, &new_tid, b, BPF_ANY)) {
		aiorb_count_drop(&events_drops);
		aiorb_count_drop(&exec_enter_drops);
	}
	bpf_map_delete_elem(&inflight, &old_tid);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
