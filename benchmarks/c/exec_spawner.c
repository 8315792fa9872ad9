// SPDX-License-Identifier: MIT
/* exec_filter.py's spawner: N execs of a program, one after another.
 *
 *   exec_spawner N PATH
 *
 * posix_spawn(PATH) and waitpid, N times (vfork-style spawn: the least
 * user-space work per exec, so the tracer's share stands out). Prints one
 * JSON line: {"execs": n, "wall_s": s, "cpu_s": s}, cpu_s being this
 * process's and its children's user + system time (the BPF programs run
 * in the exec'ing child, so their cost lands there). */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu(int who)
{
	struct rusage ru;

	getrusage(who, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s N PATH\n", argv[0]);
		return 2;
	}
	long n = strtol(argv[1], NULL, 10);
	char *child_argv[] = {argv[2], NULL};
	double t0 = now(), c0 = cpu(RUSAGE_SELF) + cpu(RUSAGE_CHILDREN);

	for (long i = 0; i < n; i++) {
		pid_t pid;
		int status, err = posix_spawn(&pid, argv[2], NULL, NULL, child_argv, environ);

		if (err) {
			fprintf(stderr, "posix_spawn %s: error %d\n", argv[2], err);
			return 1;
		}
		if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) {
			fprintf(stderr, "%s did not exit 0\n", argv[2]);
			return 1;
		}
	}
	double wall = now() - t0, c = cpu(RUSAGE_SELF) + cpu(RUSAGE_CHILDREN) - c0;

	printf("{\"execs\": %ld, \"wall_s\": %.9f, \"cpu_s\": %.6f}\n", n, wall, c);
	return 0;
}
