/* zombie MODE: process trees with children in unusual states. Prints
 * "<mode> <pid> tick N ok|BAD" lines.
 *   zombie: forks a child that exits with status 7 (left unreaped: a zombie),
 *           one that stops itself with raise(SIGSTOP) and one killed by
 *           SIGTERM (another zombie, leading a process group of its own).
 *           On SIGUSR1 the parent reaps both
 *           zombies and prints "reaped <pid> status <s> ok" for each (BAD
 *           unless they ended with exit 7 and SIGTERM); ticks say BAD from
 *           then on if a reap failed.
 *   files:  clone(CLONE_FILES) without CLONE_THREAD: two processes that
 *           share one fd table. Every tick the parent dup()s an fd and
 *           passes its number to the child over a pipe; the child checks
 *           the fd is open in its table, closes it and answers; the parent
 *           checks it is closed in its own: BAD unless the table is shared.
 *   files-siblings: two children share a table their parent no longer
 *           shares (unshare(CLONE_FILES) after the clones).
 * Every mode counts the SIGCHLDs it gets (SA_NOCLDSTOP: exits only) and
 * prints "sigchld N" in each tick line. */
#define _GNU_SOURCE
#include <fcntl.h>
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

static volatile sig_atomic_t chld;
static void onchld(int s) { (void)s; chld++; }

static int ask[2], answer[2];
static char stack[64 << 10], stack2[64 << 10];
static int sharer(void *arg) {
	(void)arg;
	for (;;) {
		int fd;
		if (read(ask[0], &fd, sizeof fd) != sizeof fd) continue;
		char ok = fcntl(fd, F_GETFD) >= 0 && close(fd) == 0;
		write(answer[1], &ok, 1);
	}
	return 0;
}
static int idle(void *arg) {
	(void)arg;
	for (;;) pause();
	return 0;
}

int main(int argc, char **argv) {
	mode = argc > 1 ? argv[1] : "zombie";
	int ok = 1;
	pid_t z = -1, k = -1;
	struct sigaction sa = {.sa_handler = onchld, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
	sigaction(SIGCHLD, &sa, NULL);
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
			setpgid(0, 0); /* a group of its own: restore must give it back */
			kill(getpid(), SIGTERM);
			for (;;) pause();
		}
		signal(SIGUSR1, onusr1);
	} else if (strcmp(mode, "files") == 0) {
		if (pipe(ask) || pipe(answer)) ok = 0;
		if (clone(sharer, stack + sizeof stack, CLONE_FILES | SIGCHLD, NULL) < 0) ok = 0;
	} else if (strcmp(mode, "files-siblings") == 0) {
		if (clone(idle, stack + sizeof stack, CLONE_FILES | SIGCHLD, NULL) < 0) ok = 0;
		if (clone(idle, stack2 + sizeof stack2, CLONE_FILES | SIGCHLD, NULL) < 0) ok = 0;
		if (unshare(CLONE_FILES)) ok = 0;
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
		if (strcmp(mode, "files") == 0) {
			int fd = dup(1);
			char got = 0;
			if (fd < 0 || write(ask[1], &fd, sizeof fd) != sizeof fd || read(answer[0], &got, 1) != 1 || !got ||
			    fcntl(fd, F_GETFD) >= 0) {
				printf("fd %d not shared\n", fd);
				ok = 0;
			}
		}
		printf("%s %d tick %ld sigchld %d %s\n", mode, getpid(), tick, (int)chld, ok ? "ok" : "BAD");
		fflush(stdout);
		msleep(100);
	}
}
