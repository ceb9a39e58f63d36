/* lazyfork MIB PERIOD_MS: a forking server for lazy restore tests. It
 * fills MIB MiB and a 4 MiB block with position-derived patterns; every
 * PERIOD ms it forks a child that checks all of it, drops a MiB with
 * MADV_DONTNEED (which must read zero after), moves the block with mremap
 * and checks it there; the parent checks everything too, moves its block
 * to a fresh place, drops and refills a MiB, and prints
 * "lazyfork <pid> tick N ok|BAD". */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BLOCK (4u << 20)
#define MIB (1u << 20)

static uint64_t *mem, *blk;
static size_t len;

static uint64_t pat(size_t k) { return k * 0x9e3779b97f4a7c15ULL + 1; }
static uint64_t bpat(size_t k) { return k * 0xc2b2ae3d27d4eb4fULL + 7; }

static int check_mem(size_t from, size_t to) {
	for (size_t k = from / 8; k < to / 8; k++)
		if (mem[k] != pat(k)) return 0;
	return 1;
}
static int check_blk(const uint64_t *b) {
	for (size_t k = 0; k < BLOCK / 8; k++)
		if (b[k] != bpat(k)) return 0;
	return 1;
}
static int zero(const uint64_t *p, size_t n) {
	for (size_t k = 0; k < n / 8; k++)
		if (p[k]) return 0;
	return 1;
}

int main(int argc, char **argv) {
	if (argc < 3) return 2;
	len = (size_t)atol(argv[1]) << 20;
	long period = atol(argv[2]);
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	blk = mmap(NULL, BLOCK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED || blk == MAP_FAILED) return 1;
	for (size_t k = 0; k < len / 8; k++) mem[k] = pat(k);
	for (size_t k = 0; k < BLOCK / 8; k++) blk[k] = bpat(k);
	for (long tick = 0;; tick++) {
		int ok = 1;
		pid_t pid = fork();
		if (pid == 0) {
			int cok = check_mem(0, len) && check_blk(blk);
			uint64_t *drop = mem + (len / 2) / 8;
			madvise(drop, MIB, MADV_DONTNEED);
			cok = cok && zero(drop, MIB);
			uint64_t *moved = mremap(blk, BLOCK, BLOCK, MREMAP_MAYMOVE | MREMAP_FIXED,
						 (char *)mmap(NULL, BLOCK, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
			cok = cok && moved != MAP_FAILED && check_blk(moved);
			_exit(cok ? 0 : 1);
		}
		if (pid < 0) ok = 0;
		/* the parent's own events while its child runs */
		void *to = mmap(NULL, BLOCK, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		uint64_t *moved = mremap(blk, BLOCK, BLOCK, MREMAP_MAYMOVE | MREMAP_FIXED, to);
		if (moved == MAP_FAILED) ok = 0; else blk = moved;
		ok = ok && check_blk(blk);
		size_t piece = (size_t)(tick % 8) * (len / 8);
		madvise((char *)mem + piece, MIB, MADV_DONTNEED);
		ok = ok && zero(mem + piece / 8, MIB);
		for (size_t k = piece / 8; k < (piece + MIB) / 8; k++) mem[k] = pat(k);
		ok = ok && check_mem(0, len);
		int st = 0;
		if (pid > 0 && (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)) ok = 0;
		printf("lazyfork %d tick %ld %s\n", getpid(), tick, ok ? "ok" : "BAD");
		fflush(stdout);
		struct timespec ts = {period / 1000, (period % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}
}
