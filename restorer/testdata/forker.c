/* forker: a parent and a forked child, each keeping a checked pattern and
 * printing "forker <pid> tick N ok|BAD" every 100 ms (stdout in O_APPEND).
 * usage: forker */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t mem[1 << 17];

static void fill(uint64_t seed) { for (size_t i = 0; i < sizeof mem / 8; i++) mem[i] = seed * 2654435761u + i; }
static int check(uint64_t seed) {
	for (size_t i = 0; i < sizeof mem / 8; i++) if (mem[i] != seed * 2654435761u + i) return 0;
	return 1;
}

int main(void) {
	pid_t child = fork();
	uint64_t seed = child == 0 ? 2 : 1;
	fill(seed);
	for (long tick = 0;; tick++) {
		printf("forker %d tick %ld %s\n", getpid(), tick, check(seed) ? "ok" : "BAD");
		fflush(stdout);
		struct timespec ts = {0, 100 * 1000 * 1000};
		while (nanosleep(&ts, &ts) != 0) {}
	}
}
