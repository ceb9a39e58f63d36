/* manythreads N: N threads, each counting its own ticks every 20 ms (its
 * counter checked against a copy on its own stack). The main thread prints
 * "manythreads <pid> tick T ok" every 100 ms once every thread ticked once,
 * so the time to the first tick is the time to set the threads up; BAD if a
 * thread's copies differ or a thread made no progress over 30 main ticks
 * (counted in ticks, not time: a dump or a restore may stop the clock). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile uint64_t *ticks;
static volatile int *bad;

static void *worker(void *arg) {
	long id = (long)arg;
	uint64_t mine = 0; /* on this thread's stack */
	for (;;) {
		if (ticks[id] != mine) bad[id] = 1;
		mine++;
		ticks[id] = mine;
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int main(int argc, char **argv) {
	int n = argc > 1 ? atoi(argv[1]) : 10;
	ticks = calloc(n, sizeof *ticks);
	bad = calloc(n, sizeof *bad);
	uint64_t *seen = calloc(n, sizeof *seen);
	int *stale = calloc(n, sizeof *stale);
	if (!ticks || !bad || !seen || !stale) return 1;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 << 10);
	for (long i = 0; i < n; i++) {
		pthread_t t;
		if (pthread_create(&t, &attr, worker, (void *)i)) return 1;
	}
	for (int i = 0; i < n; i++)
		while (ticks[i] == 0) usleep(1000);
	for (long tick = 1;; tick++) {
		int ok = 1;
		for (int i = 0; i < n; i++) {
			if (ticks[i] != seen[i]) seen[i] = ticks[i], stale[i] = 0;
			else stale[i]++;
			if (bad[i] || stale[i] >= 30) ok = 0;
		}
		printf("manythreads %d tick %ld %s\n", getpid(), tick, ok ? "ok" : "BAD");
		fflush(stdout);
		usleep(100 * 1000);
	}
}
