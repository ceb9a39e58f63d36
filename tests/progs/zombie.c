/* zombie MODE: process trees with children in unusual states. Prints
 * "<mode> <pid> tick N ok|BAD" lines.
 *   zombie: forks a child that exits with status 7 (left unreaped: a zombie),
 *           one that stops itself with raise(SIGSTOP) and one killed by
 *           SIGTERM (another zombie). On SIGUSR1 the parent reaps both
 *           zombies and prints "reaped <pid> status <s> ok" for each (BAD
 *           unless they ended with exit 7 and SIGTERM); ticks say BAD from
 *           then on if a reap failed.
 *   files:  clone(CLONE_FILES) without CLONE_THREAD: two processes that
 *           share one fd table. */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *mode;
static volatile sig_atomic_t reap;
static void onusr1(int s) { (void)s; reap = 1; }

static void msleep(long ms) {
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) != 0) {
	}
}

static char stack[64 << 10];
static int sharer(void *arg) {
	(void)arg;
	for (;;) pause();
	return 0;
}

int main(int argc, char **argv) {
	mode = argc > 1 ? argv[1] : "zombie";
	int ok = 1;
	pid_t z = -1, k = -1;
	if (strcmp(mode, "zombie") == 0) {
		z = fork();
		if (z == 0) _exit(7);
		pid_t s = fork();
		if (s == 0) {
			raise(SIGSTOP);
			for (;;) pause();
		}
		k = fork();
		if (k == 0) {
			kill(getpid(), SIGTERM);
			for (;;) pause();
		}
		signal(SIGUSR1, onusr1);
	} else if (strcmp(mode, "files") == 0) {
		if (clone(sharer, stack + sizeof stack, CLONE_FILES | SIGCHLD, NULL) < 0) ok = 0;
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	for (long tick = 1;; tick++) {
		if (reap && z > 0) {
			int st = 0;
			pid_t got = waitpid(z, &st, 0);
			int good = got == z && WIFEXITED(st) && WEXITSTATUS(st) == 7;
			printf("reaped %d status %#x %s\n", (int)got, st, good ? "ok" : "BAD");
			if (!good) ok = 0;
			z = -1;
			got = waitpid(k, &st, 0);
			good = got == k && WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM;
			printf("reaped %d status %#x %s\n", (int)got, st, good ? "ok" : "BAD");
			if (!good) ok = 0;
		}
		printf("%s %d tick %ld %s\n", mode, getpid(), tick, ok ? "ok" : "BAD");
		fflush(stdout);
		msleep(100);
	}
}
