// SPDX-License-Identifier: MIT
/* The benchmark's producer: getpgid(0) in a loop, pinned to one CPU.
 *
 *   producer CPU spin SECONDS      as fast as it can, for SECONDS
 *   producer CPU rate R SECONDS    R calls a second (busy-wait pacing)
 *   producer CPU count N           exactly N calls, as fast as it can
 *
 * Prints "ready <pid>" and waits for a line on stdin (so the harness can
 * point the BPF program at this pid first), runs, then prints one JSON
 * line: {"calls": n, "seconds": s}. Each call is one record of the
 * tracepoint program (bench.bpf.c) when it targets this pid. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	char line[64];
	cpu_set_t set;
	long long calls = 0;
	double t0, t1;

	if (argc < 4) {
		fprintf(stderr, "usage: producer CPU spin SECONDS | rate R SECONDS | count N\n");
		return 2;
	}
	CPU_ZERO(&set);
	CPU_SET(atoi(argv[1]), &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		perror("sched_setaffinity");
		return 1;
	}
	printf("ready %d\n", getpid());
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	t0 = now();
	if (!strcmp(argv[2], "spin")) {
		double end = t0 + atof(argv[3]);

		while (1) {
			for (int i = 0; i < 256; i++)
				syscall(SYS_getpgid, 0);
			calls += 256;
			if (now() >= end)
				break;
		}
	} else if (!strcmp(argv[2], "rate") && argc > 4) {
		double rate = atof(argv[3]), seconds = atof(argv[4]);
		long long total = (long long)(rate * seconds);

		for (; calls < total; calls++) {
			double due = t0 + calls / rate;

			while (now() < due)
				;
			syscall(SYS_getpgid, 0);
		}
	} else if (!strcmp(argv[2], "count")) {
		long long n = atoll(argv[3]);

		for (; calls < n; calls++)
			syscall(SYS_getpgid, 0);
	} else {
		fprintf(stderr, "producer: unknown mode %s\n", argv[2]);
		return 2;
	}
	t1 = now();
	printf("{\"calls\": %lld, \"seconds\": %.6f}\n", calls, t1 - t0);
	return 0;
}
