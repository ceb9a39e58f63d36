/* wloop MIB: a write-heavy loop for the tracking benchmark. It fills MIB
 * MiB, prints "ready", then for each stdin line "loop R" rewrites every
 * 8-byte word of the region R times and prints "ns <elapsed>". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

int main(int argc, char **argv) {
	size_t n = ((size_t)atol(argv[1]) << 20) / 8;
	uint64_t *mem = mmap(NULL, n * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) return 1;
	for (size_t i = 0; i < n; i++) mem[i] = i;
	printf("ready\n");
	fflush(stdout);
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		long r = 0;
		if (sscanf(line, "loop %ld", &r) != 1) continue;
		struct timespec a, b;
		clock_gettime(CLOCK_MONOTONIC, &a);
		for (long k = 0; k < r; k++)
			for (size_t i = 0; i < n; i++) mem[i] = mem[i] * 6364136223846793005ULL + (uint64_t)k;
		clock_gettime(CLOCK_MONOTONIC, &b);
		printf("ns %lld\n", (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec));
		fflush(stdout);
	}
	return 0;
}
