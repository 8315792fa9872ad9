// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * exec.bpf.c - one record per exec attempt: who, what, result, and context.
 *
 * The kernel half of aioringbuf.exec_events() and `aioringbuf exec`.
 *
 * Where each fact comes from (DESIGN.md, "Exec tracing"):
 *
 * - A successful exec is reported at sched_process_exec (BTF tracepoint),
 *   once the new image is set up: the file name from the linux_binprm (the
 *   kernel's own copy), argv from the new mm's arg_start..arg_end (which the
 *   kernel has just written, so it is resident and the caller can no longer
 *   change it), the file's inode, device, and whether it was deleted or is a
 *   memfd. Nothing the caller does to its own memory can empty this record.
 *
 * - The syscall entry (syscalls/sys_enter_execve*, and the raw sys_enter
 *   tracepoint for 32-bit execs, which fire no syscalls/ tracepoint) only
 *   parks what it alone knows, keyed by thread id: dirfd, at_flags, the
 *   syscall, the caller's pointers. A failed attempt is reported at syscall
 *   exit, where its errno is known; its file name and argv are
 *   read then from the caller's memory, which the failed exec left in place
 *   (and the kernel's copy may just have faulted in; a caller can change it
 *   in between). sched_process_exec forgets the
 *   parked entry of a successful exec, so it is never reported twice.
 *
 * Filters (set in .rodata before loading, so the verifier drops the code of
 * unused ones): a real uid, a cgroup v2 subtree, and the result (failed
 * attempts only, or successful execs only). What they leave out never
 * reaches the ring; an attempt that passes the uid and cgroup filters but
 * not the result filter is counted in exec_filtered (not a drop: it was
 * asked for), so a user can be told what the result filter hid.
 *
 * Accounting: a record that the ring has no room for is counted in
 * events_drops (stats().kernel_drops), one it took in events_written. An entry that cannot be parked
 * (more than EXEC_INFLIGHT_MAX execs in flight at once) is counted in
 * exec_enter_drops: if that exec succeeds it is still reported (without
 * dirfd/at_flags, flagged EXEC_F_NO_ENTRY); if it fails, it is not.
 *
 * Known gaps: an exec in flight when the program is attached has no parked
 * entry (reported if it succeeds, flagged EXEC_F_NO_ENTRY; not if it fails).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "aioringbuf.bpf.h"

#define EXEC_FILENAME_MAX 4096 /* PATH_MAX, NUL included: longer names fail */
#define EXEC_ARGS_MAX 4096     /* bytes of argv kept, each string's NUL included */
#define EXEC_MAX_ARGS 128      /* argv strings read from a failed caller's memory */
#define EXEC_BUF_SIZE 16384    /* power of two: record sizes are masked with it */
#define EXEC_INFLIGHT_MAX 10240

#define EXEC_KIND_EXEC 1 /* the leading tag of every exec record */
#define EXEC_KIND_EXIT 2 /* ... and of every exit record (struct exit_event) */
#define EXIT_F_SINCE_EXEC 1 /* duration_ns counts from its exec, not its start */

#define EXEC_F_ARGS_TRUNCATED 1     /* argv had more than was kept */
#define EXEC_F_FILENAME_TRUNCATED 2 /* name longer than PATH_MAX (exec fails) */
#define EXEC_F_EXECVEAT 4           /* execveat(2), not execve(2) */
#define EXEC_F_COMPAT 8             /* through the 32-bit syscall gate */
#define EXEC_F_DELETED 16           /* the executed file has no name left */
#define EXEC_F_MEMFD 32             /* the executed file is a memfd */
#define EXEC_F_NO_ENTRY 64          /* no syscall entry was seen: dirfd unknown */

#define FILTER_ANY 0       /* filter_failed: every attempt */
#define FILTER_FAILED 1    /* only failed attempts */
#define FILTER_SUCCEEDED 2 /* only successful execs */

#define AT_FDCWD_ -100
#define AUDIT_UID_UNSET 0xffffffffU

/* The record header; aioringbuf/_exec.py mirrors it (struct format
 * "<IIQQQIIIIIIIIIiiIIHH16s16s"). filename_len bytes of file name (NUL
 * included), then args_len bytes of NUL-terminated argv strings, follow it. */
struct exec_event {
	__u32 kind;      /* EXEC_KIND_EXEC */
	__u32 flags;     /* EXEC_F_* */
	__u64 ts_ns;     /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) when reported */
	__u64 cgroup_id; /* cgroup v2 id of the process */
	__u64 ino;       /* inode of the executed file (0 for a failed attempt) */
	__u32 dev;       /* its device, kernel encoding: major << 20 | minor */
	__u32 mntns;     /* mount namespace inode number */
	__u32 pidns;     /* pid namespace inode number (the active one) */
	__u32 pid;       /* tgid */
	__u32 tid;       /* the thread that called exec (differs: a thread exec'd) */
	__u32 ppid;      /* tgid of the real parent */
	__u32 uid;       /* real uid and gid */
	__u32 gid;
	__u32 loginuid;  /* audit login uid; AUDIT_UID_UNSET when unset */
	__s32 ret;       /* 0 or -errno */
	__s32 dirfd;     /* execveat's dirfd; AT_FDCWD for execve */
	__u32 at_flags;  /* execveat's flags (AT_EMPTY_PATH, ...); 0 for execve */
	__u32 argc;      /* the new program's argc (all of argv, kept or not) */
	__u16 filename_len;
	__u16 args_len;
	char comm[16];   /* the new program's name, or the caller's if it failed */
	char pcomm[16];  /* the parent's name */
};

/* Room for the worst case the verifier sees when it checks an argv read:
 * the furthest start (header + name + almost all argv) plus the largest read. */
struct exec_buf {
	struct exec_event hdr;
	__u8 data[EXEC_BUF_SIZE - sizeof(struct exec_event)];
};

_Static_assert(sizeof(struct exec_event) == 120, "mirrored in aioringbuf/_exec.py");
_Static_assert(sizeof(struct exec_event) + EXEC_FILENAME_MAX + 2 * EXEC_ARGS_MAX <=
		       EXEC_BUF_SIZE,
	       "exec_buf must hold the verifier's worst case");

/* A thread-group leader's exit; aioringbuf/_exec.py mirrors it
 * ("<IIQQQIIIiI16s"). */
struct exit_event {
	__u32 kind;        /* EXEC_KIND_EXIT */
	__u32 flags;       /* EXIT_F_* */
	__u64 ts_ns;       /* bpf_ktime_get_ns() at sched_process_exit */
	__u64 cgroup_id;
	__u64 duration_ns; /* since its exec (EXIT_F_SINCE_EXEC) or its start */
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	__s32 exit_code;   /* the status exit() was given, 0..255 */
	__u32 signal;      /* the signal that ended it, 0 if none */
	char comm[16];
};

_Static_assert(sizeof(struct exit_event) == 72, "mirrored in aioringbuf/_exec.py");

/* What a syscall entry parks for its exit or for sched_process_exec. */
struct exec_start {
	__u64 filename; /* the caller's pointers, read only if the exec fails */
	__u64 argv;
	__s32 dirfd;
	__u32 at_flags;
	__u32 flags; /* EXEC_F_EXECVEAT, EXEC_F_COMPAT */
	__u32 pad;
};

/* Filters, set by user space in the object's .rodata before loading. */
const volatile __u32 filter_uid = AUDIT_UID_UNSET; /* real uid; -1: any */
const volatile __u64 filter_cgroup_id = 0;         /* 0: any */
const volatile __u32 filter_cgroup_level = 0;      /* its depth below the root */
const volatile __u8 filter_failed = 0; /* FILTER_ANY, FILTER_FAILED or FILTER_SUCCEEDED */
const volatile __u8 want_exits = 0;                /* also report exits */

/* 8 MiB: about 40,000 typical records, so a burst of execs waits for a busy
 * consumer instead of being dropped. exec_events(ring_size=...) changes it. */
AIORINGBUF_RINGBUF(events, 8 << 20);

/* One small entry per thread inside execve (preallocated: 40 bytes each). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EXEC_INFLIGHT_MAX);
	__type(key, __u32);
	__type(value, struct exec_start);
} inflight SEC(".maps");

/* Where a record is built: too big for the 512-byte BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_buf);
} scratch SEC(".maps");

/* When each process last exec'd (tgid -> ns), for the exit's duration.
 * LRU: a process that never exits here (or was missed) ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} exec_time SEC(".maps");

/* Entries that could not be parked because `inflight` was full. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} exec_enter_drops SEC(".maps");

/* Attempts that the result filter (filter_failed) kept out of the ring. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} exec_filtered SEC(".maps");

/* Does the current task pass the uid and cgroup filters? */
static __always_inline bool wanted(void)
{
	if (filter_uid != AUDIT_UID_UNSET && (__u32)bpf_get_current_uid_gid() != filter_uid)
		return false;
	if (filter_cgroup_id &&
	    bpf_get_current_ancestor_cgroup_id(filter_cgroup_level) != filter_cgroup_id)
		return false;
	return true;
}

/* Who, where, when: everything but the file and argv, for the current task. */
static __always_inline void fill_context(struct exec_event *e, __u32 tid)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *parent = BPF_CORE_READ(task, real_parent);
	__u64 ugid = bpf_get_current_uid_gid();
	unsigned int level = BPF_CORE_READ(task, thread_pid, level);
	struct pid *pid = BPF_CORE_READ(task, thread_pid);
	struct upid up = {};

	e->kind = EXEC_KIND_EXEC;
	e->ts_ns = bpf_ktime_get_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->tid = tid;
	e->ppid = BPF_CORE_READ(parent, tgid);
	e->uid = (__u32)ugid;
	e->gid = ugid >> 32;
	e->loginuid = BPF_CORE_READ(task, loginuid.val);
	e->mntns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	bpf_core_read(&up, sizeof(up), &pid->numbers[level]);
	e->pidns = BPF_CORE_READ(up.ns, ns.inum);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	BPF_CORE_READ_STR_INTO(&e->pcomm, parent, comm);
}

/* Records the ring accepted, so that after detaching user space knows how
 * many it has yet to read: written == delivered + queue_drops +
 * decode_errors + what is still unread. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} events_written SEC(".maps");

static __always_inline void write_record(void *data, __u64 size)
{
	if (AIORINGBUF_OUTPUT(events, data, size, 0) == 0)
		aiorb_count_drop(&events_written); /* a plain per-CPU count */
}

static __always_inline int output(struct exec_buf *b)
{
	__u64 size = sizeof(b->hdr) + b->hdr.filename_len + b->hdr.args_len;

	/* At most 120 + 4096 + 4096 already; the mask proves the bound. */
	size &= EXEC_BUF_SIZE - 1;
	write_record(b, size);
	return 0;
}

static __always_inline struct exec_buf *scratch_buf(void)
{
	__u32 zero = 0;
	struct exec_buf *b = bpf_map_lookup_elem(&scratch, &zero);

	if (!b)
		aiorb_count_drop(&events_drops); /* cannot happen; never lose silently */
	return b;
}

/* ---- entry: park what only the syscall knows ---------------------------- */

static __always_inline int on_enter(__u64 filename, __u64 argv, int dirfd, __u32 at_flags,
				    __u32 flags)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct exec_start s = {
		.filename = filename, .argv = argv, .dirfd = dirfd,
		.at_flags = at_flags, .flags = flags,
	};

	if (!wanted())
		return 0;
	/* BPF_ANY: an entry still under this tid belongs to an exec whose exit
	 * was never seen (it started before we attached); it is stale. */
	if (bpf_map_update_elem(&inflight, &tid, &s, BPF_ANY))
		aiorb_count_drop(&exec_enter_drops);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int on_execve_enter(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(ctx->args[0], ctx->args[1], AT_FDCWD_, 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_execveat")
int on_execveat_enter(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(ctx->args[1], ctx->args[2], (int)ctx->args[0], (__u32)ctx->args[4],
			EXEC_F_EXECVEAT);
}

/* 32-bit execs (int $0x80, sysenter) fire no syscalls/ tracepoint. This
 * kernel refuses fentry/fexit programs, so the raw sys_enter/sys_exit
 * tracepoints catch them: they run for every syscall of the machine, and
 * return after one compare unless the number is ia32 execve/execveat. The
 * thread's TS_COMPAT status tells a 32-bit syscall 11 (execve) from a 64-bit
 * one (munmap); the kernel clears it before each return to user space. */
#define IA32_NR_EXECVE 11
#define IA32_NR_EXECVEAT 358
#define TS_COMPAT_ 0x0002

static __always_inline bool in_compat_syscall_(void)
{
	struct task_struct *task = bpf_get_current_task_btf();

	return task->thread_info.status & TS_COMPAT_;
}

/* The ia32 syscall ABI passes arguments in bx, cx, dx, si, di. */
SEC("tp_btf/sys_enter")
int BPF_PROG(on_compat_enter, struct pt_regs *regs, long id)
{
	if (id != IA32_NR_EXECVE && id != IA32_NR_EXECVEAT)
		return 0;
	if (!in_compat_syscall_())
		return 0;
	if (id == IA32_NR_EXECVE)
		return on_enter((__u32)regs->bx, (__u32)regs->cx, AT_FDCWD_, 0, EXEC_F_COMPAT);
	return on_enter((__u32)regs->cx, (__u32)regs->dx, (int)regs->bx, (__u32)regs->di,
			EXEC_F_EXECVEAT | EXEC_F_COMPAT);
}

/* ---- success: the kernel's own copy, at sched_process_exec --------------- */

/* Is the dentry's name "memfd:..." and the dentry a pseudo root (in no
 * directory)? memfd_create's files are exactly that; a file merely named
 * "memfd:x" in some directory has a parent. */
static __always_inline bool is_memfd(struct dentry *d, const unsigned char *name)
{
	return name[0] == 'm' && name[1] == 'e' && name[2] == 'm' && name[3] == 'f' &&
	       name[4] == 'd' && name[5] == ':' && BPF_CORE_READ(d, d_parent) == d;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_process_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 old_tid = old_pid;
	struct exec_start *s = bpf_map_lookup_elem(&inflight, &old_tid);
	__u32 flags = EXEC_F_NO_ENTRY;
	__s32 dirfd = AT_FDCWD_;
	__u32 at_flags = 0;
	struct exec_buf *b;
	struct file *file;
	struct dentry *dentry;
	struct inode *inode;
	unsigned long arg_start, arg_end;
	__u64 fn, len;
	long n;

	if (s) {
		flags = s->flags;
		dirfd = s->dirfd;
		at_flags = s->at_flags;
		bpf_map_delete_elem(&inflight, &old_tid); /* reported here, not at exit */
	}
	if (want_exits) {
		__u32 tgid = bpf_get_current_pid_tgid() >> 32;
		__u64 now = bpf_ktime_get_ns();

		bpf_map_update_elem(&exec_time, &tgid, &now, BPF_ANY);
	}
	if (!wanted())
		return 0;
	if (filter_failed == FILTER_FAILED) {
		aiorb_count_drop(&exec_filtered); /* a plain per-CPU count */
		return 0;
	}
	b = scratch_buf();
	if (!b)
		return 0;
	fill_context(&b->hdr, old_tid);
	b->hdr.ret = 0;
	b->hdr.dirfd = dirfd;
	b->hdr.at_flags = at_flags;
	b->hdr.argc = BPF_CORE_READ(bprm, argc);

	file = BPF_CORE_READ(bprm, file);
	dentry = BPF_CORE_READ(file, f_path.dentry);
	inode = BPF_CORE_READ(file, f_inode);
	b->hdr.ino = BPF_CORE_READ(inode, i_ino);
	b->hdr.dev = BPF_CORE_READ(inode, i_sb, s_dev);

	/* The file name: memfd:NAME for a memfd (execveat(fd, "", AT_EMPTY_PATH)
	 * would otherwise show only /dev/fd/N), else the name exec was given. */
	n = bpf_probe_read_kernel_str(b->data, EXEC_FILENAME_MAX,
				      BPF_CORE_READ(dentry, d_name.name));
	if (n > 6 && is_memfd(dentry, b->data)) {
		flags |= EXEC_F_MEMFD;
	} else {
		n = bpf_probe_read_kernel_str(b->data, EXEC_FILENAME_MAX,
					      BPF_CORE_READ(bprm, filename));
		if (BPF_CORE_READ(inode, __i_nlink) == 0)
			flags |= EXEC_F_DELETED;
	}
	if (n < 0)
		n = 0;
	fn = n;
	if (fn > EXEC_FILENAME_MAX)
		fn = EXEC_FILENAME_MAX; /* already true: says so to the verifier */
	b->hdr.filename_len = fn;

	/* argv: arg_start..arg_end of the new mm, NUL-separated as exec wrote it. */
	arg_start = BPF_CORE_READ(p, mm, arg_start);
	arg_end = BPF_CORE_READ(p, mm, arg_end);
	len = arg_end > arg_start ? arg_end - arg_start : 0;
	if (len > EXEC_ARGS_MAX) {
		len = EXEC_ARGS_MAX;
		flags |= EXEC_F_ARGS_TRUNCATED;
	}
	barrier_var(len);
	if (len > 0 && bpf_probe_read_user(&b->data[fn], len, (void *)arg_start) == 0) {
		b->data[(fn + len - 1) & (EXEC_BUF_SIZE - 1)] = 0; /* a cut string ends too */
	} else {
		len = 0;
		if (b->hdr.argc)
			flags |= EXEC_F_ARGS_TRUNCATED;
	}
	b->hdr.args_len = len;
	b->hdr.flags = flags;
	return output(b);
}

/* ---- failure: what the caller passed, read at syscall exit -------------- */

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
		n = 0; /* unreadable: the exec itself failed with -EFAULT */
	if (n > EXEC_FILENAME_MAX)
		n = EXEC_FILENAME_MAX;
	if (n == EXEC_FILENAME_MAX && was_cut(filename, n))
		b->hdr.flags |= EXEC_F_FILENAME_TRUNCATED;
	b->hdr.filename_len = n;
}

/* argv[i] of a native (8-byte pointers) or compat (4-byte) caller. */
static __always_inline const char *arg_at(__u64 argv, int i, bool compat)
{
	__u64 p = 0;
	__u32 p32 = 0;

	if (compat) {
		if (bpf_probe_read_user(&p32, sizeof(p32), (void *)(argv + 4 * i)))
			return NULL;
		return (const char *)(__u64)p32;
	}
	if (bpf_probe_read_user(&p, sizeof(p), (void *)(argv + 8 * i)))
		return NULL;
	return (const char *)p;
}

/* Copy argv strings after the file name until EXEC_MAX_ARGS strings or
 * EXEC_ARGS_MAX bytes; flag the record when anything was left out. */
static __always_inline void read_args(struct exec_buf *b, __u64 argv, bool compat)
{
	/* 64-bit on purpose: with __u32, clang checks a zero-extended copy and
	 * the verifier never learns the bound of the register it then uses. */
	__u64 start = b->hdr.filename_len, len = 0, argc = 0;
	const char *arg;
	int i;

	if (start > EXEC_FILENAME_MAX)
		start = EXEC_FILENAME_MAX; /* already true: says so to the verifier */
	for (i = 0; i < EXEC_MAX_ARGS; i++) {
		long n;
		__u64 room;

		arg = arg_at(argv, i, compat);
		if (!arg)
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
			/* unreadable argv string: the exec failed with -EFAULT */
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
	if (arg_at(argv, EXEC_MAX_ARGS, compat))
		b->hdr.flags |= EXEC_F_ARGS_TRUNCATED;
done:
	b->hdr.args_len = len;
	b->hdr.argc = argc;
}

static __always_inline int on_exit(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct exec_start *s = bpf_map_lookup_elem(&inflight, &tid);
	struct exec_buf *b;

	if (!s)
		return 0; /* succeeded (reported), entered before we attached, or filtered */
	if (ret >= 0)
		goto forget; /* cannot happen: sched_process_exec forgot it */
	if (filter_failed == FILTER_SUCCEEDED) {
		aiorb_count_drop(&exec_filtered); /* parked, so it passed wanted() */
		goto forget;
	}
	b = scratch_buf();
	if (!b)
		goto forget;
	fill_context(&b->hdr, tid);
	b->hdr.ret = ret;
	b->hdr.dirfd = s->dirfd;
	b->hdr.at_flags = s->at_flags;
	b->hdr.flags = s->flags;
	b->hdr.ino = 0;
	b->hdr.dev = 0;
	read_filename(b, (const char *)s->filename);
	read_args(b, s->argv, s->flags & EXEC_F_COMPAT);
	output(b);
forget:
	bpf_map_delete_elem(&inflight, &tid);
	return 0;
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

SEC("tp_btf/sys_exit")
int BPF_PROG(on_compat_exit, struct pt_regs *regs, long ret)
{
	long id = regs->orig_ax;

	if (id != IA32_NR_EXECVE && id != IA32_NR_EXECVEAT)
		return 0;
	if (!in_compat_syscall_())
		return 0;
	return on_exit(ret);
}

/* ---- exits: thread-group leaders, at sched_process_exit ----------------- */

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_process_exit, struct task_struct *p)
{
	__u32 tgid = p->tgid;
	struct exit_event e = {};
	__u64 *exec_ns;
	int code;

	if (!want_exits || p->pid != p->tgid)
		return 0;
	exec_ns = bpf_map_lookup_elem(&exec_time, &tgid);
	e.ts_ns = bpf_ktime_get_ns();
	if (exec_ns) {
		e.duration_ns = e.ts_ns - *exec_ns;
		e.flags = EXIT_F_SINCE_EXEC;
		bpf_map_delete_elem(&exec_time, &tgid);
	} else {
		e.duration_ns = e.ts_ns - p->start_time;
	}
	/* Filters after forgetting the exec time: the map must not fill up.
	 * failed= is about exec attempts: it leaves exits alone. */
	if (!wanted())
		return 0;
	code = p->exit_code;
	e.kind = EXEC_KIND_EXIT;
	e.cgroup_id = bpf_get_current_cgroup_id();
	e.pid = tgid;
	e.ppid = BPF_CORE_READ(p, real_parent, tgid);
	e.uid = (__u32)bpf_get_current_uid_gid();
	e.exit_code = (code >> 8) & 0xff;
	e.signal = code & 0x7f;
	bpf_get_current_comm(e.comm, sizeof(e.comm));
	write_record(&e, sizeof(e));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
