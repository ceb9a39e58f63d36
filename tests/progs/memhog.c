/* memhog MIB: fills MIB MiB with distinct pseudo-random pages, prints
 * "ready <addr>", then for each stdin line "touch N" rewrites N pages spread
 * over the region with new content and prints "done". For benchmarks. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

static uint64_t s = 0x9e3779b97f4a7c15ULL;
static uint64_t next(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }

int main(int argc, char **argv) {
	size_t len = (size_t)atol(argv[1]) << 20;
	uint64_t *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) return 1;
	for (size_t i = 0; i < len / 8; i++) mem[i] = next();
	printf("ready %p\n", (void *)mem);
	fflush(stdout);
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		long n = 0;
		if (sscanf(line, "touch %ld", &n) != 1) continue;
		size_t pages = len / 4096, step = pages / (size_t)n;
		for (long k = 0; k < n; k++)
			for (size_t j = 0; j < 512; j++) mem[(size_t)k * step * 512 + j] = next();
		printf("done\n");
		fflush(stdout);
	}
	return 0;
}
