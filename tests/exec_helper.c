/* exec_helper.c - execs that the old syscall-entry capture could not see.
 *
 * Built by tests/test_exec.py with the machine's gcc (64-bit), run as
 *
 *   exec_helper hidden DATAFILE PATH ARG...
 *       execve(PATH, ARGS) with PATH, every ARG and the argv array itself
 *       in a fresh MAP_SHARED mapping of DATAFILE whose pages this process
 *       never touched, and that are not even in the page cache (the file
 *       is written with pwrite, fsync'ed and dropped with POSIX_FADV_DONTNEED;
 *       mincore() says whether that worked: printed as "resident N").
 *       bpf_probe_read_user at sys_enter_execve cannot fault them in.
 *
 *   exec_helper compat PATH ARG...
 *       execve through the 32-bit syscall gate: int $0x80 with eax = 11,
 *       its strings and argv (32-bit pointers) in a MAP_32BIT mapping.
 *       Prints the return value if the exec fails.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAP_LEN (4 * 4096)

static int hidden(int argc, char **argv)
{
	const char *datafile = argv[2];
	char *blob = calloc(1, MAP_LEN);
	unsigned char vec[MAP_LEN / 4096];
	char **ptrs;
	size_t off = 0;
	int fd, i, resident = 0;
	char *map;

	fd = open(datafile, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, MAP_LEN) < 0)
		return 90;
	map = mmap(NULL, MAP_LEN, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return 91;
	/* Page 0: the argv array (absolute pointers into the mapping); pages
	 * 1..: the strings. Built in ordinary memory, written with pwrite. */
	ptrs = (char **)blob;
	off = 4096;
	for (i = 3; i < argc; i++) {
		size_t n = strlen(argv[i]) + 1;

		if (off + n > MAP_LEN)
			return 92;
		memcpy(blob + off, argv[i], n);
		if (i > 3)
			ptrs[i - 4] = map + off;
		off += n;
	}
	ptrs[argc - 4] = NULL;
	if (pwrite(fd, blob, MAP_LEN, 0) != MAP_LEN || fsync(fd) < 0)
		return 93;
	posix_fadvise(fd, 0, MAP_LEN, POSIX_FADV_DONTNEED);
	if (mincore(map, MAP_LEN, vec) < 0)
		return 94;
	for (i = 0; i < MAP_LEN / 4096; i++)
		resident += vec[i] & 1;
	printf("resident %d\n", resident);
	fflush(stdout);
	/* PATH is argv[3], the first string (page 1); argv[] is page 0. */
	syscall(SYS_execve, map + 4096, (char **)map, (char *[]){NULL});
	perror("execve");
	return 95;
}

static int compat(int argc, char **argv)
{
	char *low = mmap(NULL, MAP_LEN, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
	uint32_t *vec = (uint32_t *)low, path, n = 0;
	char *p = low + 4096;
	long ret;
	int i;

	if (low == MAP_FAILED)
		return 90;
	strcpy(p, argv[2]);
	path = (uint32_t)(uintptr_t)p;
	p += strlen(p) + 1;
	for (i = 3; i < argc; i++) {
		strcpy(p, argv[i]);
		vec[n++] = (uint32_t)(uintptr_t)p;
		p += strlen(p) + 1;
	}
	vec[n] = 0;
	/* ebx = filename, ecx = argv, edx = envp (the argv's NULL: empty) */
	__asm__ volatile("int $0x80"
			 : "=a"(ret)
			 : "a"(11), "b"(path), "c"((uint32_t)(uintptr_t)vec),
			   "d"((uint32_t)(uintptr_t)&vec[n])
			 : "memory", "r8", "r9", "r10", "r11");
	printf("%ld\n", ret);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 4 && !strcmp(argv[1], "hidden"))
		return hidden(argc, argv);
	if (argc >= 3 && !strcmp(argv[1], "compat"))
		return compat(argc, argv);
	fprintf(stderr, "usage: exec_helper hidden DATAFILE PATH ARG... | compat PATH ARG...\n");
	return 2;
}
