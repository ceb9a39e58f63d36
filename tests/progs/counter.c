/* counter: fills a region with a pseudo-random pattern (plus a zeroed hole
 * in the middle), then every PERIOD ms re-checks the whole region and prints
 * "<prog> <pid> tick N ok|BAD". Built static and dynamic; with THREADS > 0
 * (pthreads) worker threads keep their own checked counters too.
 * usage: counter MIB PERIOD_MS THREADS */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint8_t *mem;
static size_t len;
static volatile uint64_t worker_ticks[64];

/* The zeroed hole: a MiB, or a quarter of a smaller region. */
static size_t hole(void) { return len / 4 < (1 << 20) ? len / 4 : (1 << 20); }

static uint64_t next(uint64_t *s) { *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s; }

static void fill(void) {
	uint64_t s = 0x9e3779b97f4a7c15ULL;
	for (size_t i = 0; i < len; i += 8) { uint64_t v = next(&s); memcpy(mem + i, &v, 8); }
	memset(mem + len / 2, 0, hole()); /* a zeroed MiB in the middle */
}

static int check(void) {
	uint64_t s = 0x9e3779b97f4a7c15ULL;
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = next(&s), got;
		memcpy(&got, mem + i, 8);
		if (i >= len / 2 && i < len / 2 + hole()) v = 0;
		if (got != v) return 0;
	}
	return 1;
}

static void *worker(void *arg) {
	long id = (long)arg;
	for (;;) {
		worker_ticks[id]++;
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int main(int argc, char **argv) {
	len = (size_t)(argc > 1 ? atol(argv[1]) : 16) << 20;
	long period = argc > 2 ? atol(argv[2]) : 200;
	long threads = argc > 3 ? atol(argv[3]) : 0;
	mem = malloc(len);
	fill();
	for (long i = 0; i < threads; i++) {
		pthread_t t;
		pthread_create(&t, NULL, worker, (void *)i);
	}
	for (long tick = 0;; tick++) {
		int ok = check();
		printf("counter %d tick %ld %s\n", getpid(), tick, ok ? "ok" : "BAD");
		fflush(stdout);
		struct timespec ts = {period / 1000, (period % 1000) * 1000000};
		while (nanosleep(&ts, &ts) != 0) {
			printf("counter %d EINTR\n", getpid());
			fflush(stdout);
		}
	}
}
