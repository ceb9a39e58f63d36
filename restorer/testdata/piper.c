/* piper: the parent writes numbered lines into a pipe twice as fast as
 * the forked child reads them, so bytes are always in flight; the child
 * checks the sequence and prints "piper <pid> tick N ok|BAD" (stdout in
 * O_APPEND, shared with the parent). usage: piper */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void nap(long ms) {
	struct timespec ts = {0, ms * 1000 * 1000};
	while (nanosleep(&ts, &ts) != 0) {}
}

int main(void) {
	int p[2];
	if (pipe(p) != 0) return 1;
	pid_t child = fork();
	if (child == 0) {
		close(p[1]);
		FILE *in = fdopen(p[0], "r");
		long want = 0;
		char line[64];
		for (long tick = 0; fgets(line, sizeof line, in); tick++) {
			long got = atol(line);
			printf("piper %d tick %ld %s\n", getpid(), tick, got == want ? "ok" : "BAD");
			fflush(stdout);
			want = got + 1;
			nap(100);
		}
		return 0;
	}
	close(p[0]);
	for (long n = 0; n < 100000; n++) {
		char line[64];
		int len = snprintf(line, sizeof line, "%ld\n", n);
		if (write(p[1], line, len) != len) return 2;
		nap(50);
	}
	return 0;
}
