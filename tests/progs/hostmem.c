/* hostmem: memory that checks itself, for the tests and benchmarks of
 * moving a program between hosts. Page p of its MIB MiB holds a pattern
 * of (p, version of p). Every PERIOD ms it re-checks its pages (all of
 * them, or for more than 64 MiB the next 64 MiB, round robin) and prints
 * "hostmem <pid> tick N at <CLOCK_REALTIME ms> ok|BAD". SIGUSR1 makes it
 * rewrite every EVERY-th page (default 2: half) with a new version and
 * print "hostmem <pid> rewrote N pages ok".
 * usage: hostmem MIB PERIOD_MS [EVERY] */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PG 4096
#define SLICE (64UL << 20)

static uint8_t *mem;
static uint32_t *ver;
static size_t pages;
static volatile sig_atomic_t rewrite;

static uint64_t mix(uint64_t x) {
	x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
	return x;
}

static void fill(size_t p) {
	uint64_t *w = (uint64_t *)(mem + p * PG), base = p * 1000003ULL + ver[p] * 7919ULL;
	for (int i = 0; i < PG / 8; i++) w[i] = mix(base + i);
}

static int good(size_t p) {
	const uint64_t *w = (const uint64_t *)(mem + p * PG);
	uint64_t base = p * 1000003ULL + ver[p] * 7919ULL;
	for (int i = 0; i < PG / 8; i++)
		if (w[i] != mix(base + i)) return 0;
	return 1;
}

static void on_usr1(int sig) { (void)sig; rewrite = 1; }

static long long now_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
	size_t len = (size_t)(argc > 1 ? atol(argv[1]) : 16) << 20;
	long period = argc > 2 ? atol(argv[2]) : 100;
	size_t every = argc > 3 ? (size_t)atol(argv[3]) : 2;
	if (every < 1) every = 1;
	pages = len / PG;
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ver = calloc(pages, sizeof *ver);
	if (mem == MAP_FAILED || !ver) return 1;
	for (size_t p = 0; p < pages; p++) fill(p);
	struct sigaction sa = {0};
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	size_t slice = len <= SLICE ? pages : SLICE / PG, next = 0;
	for (long tick = 0;; tick++) {
		if (rewrite) {
			rewrite = 0;
			size_t n = 0;
			for (size_t p = 0; p < pages; p += every, n++) {
				ver[p]++;
				fill(p);
			}
			printf("hostmem %d rewrote %zu pages ok\n", getpid(), n);
		}
		int ok = 1;
		for (size_t k = 0; k < slice; k++, next = (next + 1) % pages)
			if (!good(next)) ok = 0;
		printf("hostmem %d tick %ld at %lld %s\n", getpid(), tick, now_ms(), ok ? "ok" : "BAD");
		fflush(stdout);
		struct timespec ts = {period / 1000, (period % 1000) * 1000000};
		while (nanosleep(&ts, &ts) != 0 && !rewrite)
			;
	}
}
