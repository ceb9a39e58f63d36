/* trackmem: memory that changes in every way a tracked dump must follow,
 * re-checked completely at every tick against what the tick number says it
 * must hold. Each PERIOD ms it checks, prints "trackmem <pid> tick N ok|BAD",
 * then changes its memory for tick N:
 *   A (MIB MiB, anonymous): 16 pages rewritten by the program, one by the
 *     kernel (read() from a pipe), every 7th tick 8 pages dropped
 *     (MADV_DONTNEED: zero again);
 *   B (64 pages): every 5th tick unmapped and mapped afresh elsewhere;
 *   C (32 pages): every 5th tick moved (mremap) between two places, one of
 *     its pages rewritten every 5th tick too.
 * A checkpoint restored at tick N goes on with N's memory or prints BAD.
 * usage: trackmem MIB PERIOD_MS [EXIT_AFTER_TICKS] */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PG 4096
#define WRITES 16
#define BPAGES 64
#define CPAGES 32
#define ZERO (-2L)

static uint8_t *A, *B, *C, *Cplace[2];
static size_t apages;
static long *lastA, lastC[CPAGES];
static int pipefd[2];

static uint64_t mix(uint64_t x) {
	x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
	return x;
}

static void pattern(uint8_t *page, uint64_t id, long ver) {
	uint64_t *w = (uint64_t *)page;
	if (ver == ZERO) { memset(page, 0, PG); return; }
	for (int i = 0; i < PG / 8; i++) w[i] = mix(id * 1000003 + (uint64_t)ver * 7919 + i);
}

static int same(const uint8_t *page, uint64_t id, long ver) {
	static uint8_t want[PG];
	pattern(want, id, ver);
	return memcmp(page, want, PG) == 0;
}

static size_t apage(long k, int j) { return ((size_t)k * 7 + (size_t)j * 13) % apages; }

/* The pages A should hold after ticks 0..n-1. */
static void expectA(long n) {
	for (size_t p = 0; p < apages; p++) lastA[p] = -1;
	for (long k = 0; k < n; k++) {
		for (int j = 0; j < WRITES; j++) lastA[apage(k, j)] = k;
		if (k % 3 == 1) lastA[apage(k, WRITES + 1)] = k + 100000;
		if (k % 7 == 3) for (size_t p = 0; p < 8; p++) lastA[(apage(k, 0) + p) % apages] = ZERO;
	}
	for (int p = 0; p < CPAGES; p++) lastC[p] = -1;
	for (long k = 0; k < n; k++)
		if (k % 5 == 0) lastC[(k / 5) % CPAGES] = k;
}

static int check(long n) {
	expectA(n);
	for (size_t p = 0; p < apages; p++)
		if (!same(A + p * PG, p, lastA[p])) return 0;
	long bver = -1;
	for (long k = 0; k < n; k++) if (k % 5 == 2) bver = k;
	if ((bver < 0) != (B == NULL)) return 0;
	for (int p = 0; bver >= 0 && p < BPAGES; p++)
		if (!same(B + p * PG, 1000000 + p, bver)) return 0;
	long moves = 0;
	for (long k = 0; k < n; k++) if (k % 5 == 4) moves++;
	if (C != Cplace[moves % 2]) return 0;
	for (int p = 0; p < CPAGES; p++)
		if (!same(C + p * PG, 2000000 + p, lastC[p])) return 0;
	return 1;
}

static void change(long n) {
	for (int j = 0; j < WRITES; j++) pattern(A + apage(n, j) * PG, apage(n, j), n);
	if (n % 3 == 1) {
		static uint8_t buf[PG];
		size_t p = apage(n, WRITES + 1);
		pattern(buf, p, n + 100000);
		if (write(pipefd[1], buf, PG) != PG || read(pipefd[0], A + p * PG, PG) != PG) exit(3);
	}
	if (n % 7 == 3)
		for (size_t p = 0; p < 8; p++) madvise(A + ((apage(n, 0) + p) % apages) * PG, PG, MADV_DONTNEED);
	if (n % 5 == 2) {
		if (B) munmap(B, BPAGES * PG);
		B = mmap(NULL, BPAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (B == MAP_FAILED) exit(4);
		for (int p = 0; p < BPAGES; p++) pattern(B + p * PG, 1000000 + p, n);
	}
	if (n % 5 == 0) pattern(C + ((n / 5) % CPAGES) * PG, 2000000 + (n / 5) % CPAGES, n);
	if (n % 5 == 4) {
		uint8_t *to = C == Cplace[0] ? Cplace[1] : Cplace[0];
		if (mremap(C, CPAGES * PG, CPAGES * PG, MREMAP_MAYMOVE | MREMAP_FIXED, to) != to) exit(5);
		/* Keep the place it left reserved: nothing else may land there. */
		if (mmap(C, CPAGES * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != C) exit(5);
		C = to;
	}
}

int main(int argc, char **argv) {
	apages = (size_t)(argc > 1 ? atol(argv[1]) : 8) << 8;
	long period = argc > 2 ? atol(argv[2]) : 100;
	long exit_after = argc > 3 ? atol(argv[3]) : 0;
	lastA = calloc(apages, sizeof *lastA);
	A = mmap(NULL, apages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	/* Two places for C, far apart, reserved so nothing else lands there. */
	uint8_t *area = mmap(NULL, 4 * CPAGES * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (A == MAP_FAILED || area == MAP_FAILED || pipe(pipefd)) return 2;
	Cplace[0] = area, Cplace[1] = area + 2 * CPAGES * PG;
	C = mmap(Cplace[0], CPAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (C != Cplace[0]) return 2;
	for (size_t p = 0; p < apages; p++) pattern(A + p * PG, p, -1);
	for (int p = 0; p < CPAGES; p++) pattern(C + p * PG, 2000000 + p, -1);
	for (long tick = 0;; tick++) {
		printf("trackmem %d tick %ld %s\n", getpid(), tick, check(tick) ? "ok" : "BAD");
		fflush(stdout);
		if (exit_after > 0 && tick + 1 >= exit_after) return 0;
		change(tick);
		struct timespec ts = {period / 1000, (period % 1000) * 1000000};
		nanosleep(&ts, NULL);
	}
}
