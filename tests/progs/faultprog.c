/* faultprog threads N | forks N: a program that checks a dump did not harm
 * it, for the fault-injection test. Every 50 ms the main thread re-checks a
 * 1 MiB pattern and prints "faultprog <pid> tick T ok", or "... BAD <why>".
 * The signal mask set at start (SIGUSR2 and SIGWINCH blocked) is checked by
 * every thread and child each turn; no call may fail with EINTR.
 *   threads N: N worker threads each advance a counter every 10 ms; a
 *     thread whose counter did not move for 40 ticks (2 s running) is BAD.
 *   forks N: N children answer a number over a socketpair of their own
 *     (plus one, plus two if their mask changed); a wrong or missing answer
 *     or a child that exited (waitpid WNOHANG) is BAD. SIGPIPE is ignored,
 *     so a dead child shows as BAD, not as the parent's death. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static sigset_t want_mask;
static volatile int bad_mask, bad_eintr;
static volatile uint64_t *counters;
static uint8_t mem[1 << 20];

static uint64_t next(uint64_t *s) { *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s; }

static void fill(void) {
	uint64_t s = 0x9e3779b97f4a7c15ULL;
	for (size_t i = 0; i < sizeof mem; i += 8) { uint64_t v = next(&s); memcpy(mem + i, &v, 8); }
}

static int check_mem(void) {
	uint64_t s = 0x9e3779b97f4a7c15ULL;
	for (size_t i = 0; i < sizeof mem; i += 8) {
		uint64_t v = next(&s), got;
		memcpy(&got, mem + i, 8);
		if (got != v) return 0;
	}
	return 1;
}

static int mask_ok(void) {
	sigset_t cur;
	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	for (int s = 1; s < 65; s++)
		if (sigismember(&cur, s) != sigismember(&want_mask, s)) return 0;
	return 1;
}

static void nap(long ms) {
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	if (nanosleep(&ts, NULL) != 0 && errno == EINTR) bad_eintr = 1;
}

static void *worker(void *arg) {
	long id = (long)arg;
	for (;;) {
		if (!mask_ok()) bad_mask = 1;
		counters[id]++;
		nap(10);
	}
	return NULL;
}

static void child(int fd) {
	for (;;) {
		long v;
		ssize_t n = read(fd, &v, sizeof v);
		if (n < 0 && errno == EINTR) v = -1000000; /* answered wrong */
		else if (n != sizeof v) _exit(0);
		v += mask_ok() ? 1 : 2;
		if (write(fd, &v, sizeof v) != sizeof v) _exit(0);
	}
}

int main(int argc, char **argv) {
	int forks = argc > 1 && strcmp(argv[1], "forks") == 0;
	int n = argc > 2 ? atoi(argv[2]) : 4;
	sigemptyset(&want_mask);
	sigaddset(&want_mask, SIGUSR2);
	sigaddset(&want_mask, SIGWINCH);
	pthread_sigmask(SIG_SETMASK, &want_mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	fill();
	int *sk = calloc(n, sizeof *sk);
	pid_t *kids = calloc(n, sizeof *kids);
	uint64_t *seen = calloc(n, sizeof *seen);
	int *still = calloc(n, sizeof *still);
	counters = calloc(n, sizeof *counters);
	if (!sk || !kids || !seen || !still || !counters) return 1;
	for (int i = 0; i < n; i++) {
		if (forks) {
			int sv[2];
			if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return 1;
			pid_t c = fork();
			if (c < 0) return 1;
			if (c == 0) {
				close(sv[0]);
				for (int j = 0; j < i; j++) close(sk[j]);
				child(sv[1]);
			}
			close(sv[1]);
			sk[i] = sv[0];
			kids[i] = c;
		} else {
			pthread_t t;
			if (pthread_create(&t, NULL, worker, (void *)(long)i)) return 1;
		}
	}
	for (long tick = 1;; tick++) {
		const char *why = NULL;
		if (!check_mem()) why = "memory";
		if (!mask_ok() || bad_mask) why = "signal mask";
		for (int i = 0; i < n && !why; i++) {
			if (forks) {
				long v = tick * 1000 + i, got = 0;
				int st;
				if (write(sk[i], &v, sizeof v) != sizeof v || read(sk[i], &got, sizeof got) != sizeof got)
					why = "child gone";
				else if (got == v + 2) why = "child signal mask";
				else if (got != v + 1) why = "child answer";
				else if (waitpid(kids[i], &st, WNOHANG) != 0) why = "child exited";
			} else if (counters[i] != seen[i]) {
				seen[i] = counters[i];
				still[i] = 0;
			} else if (++still[i] >= 40) {
				why = "thread stuck";
			}
		}
		if (bad_eintr) why = "EINTR";
		if (why)
			printf("faultprog %d tick %ld BAD %s\n", getpid(), tick, why);
		else
			printf("faultprog %d tick %ld ok\n", getpid(), tick);
		fflush(stdout);
		nap(50);
	}
}
