/* backtrace: a pthreads program parked in leaf() <- middle() <- outer() <- main(),
 * for the core-file tests (gdb bt). Prints "ready 8" when parked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>

int global_counter = 42;
char *heapbuf;

static volatile int started;
static void *spin(void *arg) { started = 1; for (;;) pause(); return arg; }

void __attribute__((noinline)) leaf(int depth) {
	printf("ready %d\n", depth);
	fflush(stdout);
	for (;;) pause();
}
void __attribute__((noinline)) middle(int x) { leaf(x + 1); }
void __attribute__((noinline)) outer(void) { middle(7); }

int main(void) {
	pthread_t th;
	heapbuf = malloc(1 << 20);
	memset(heapbuf, 'A', 1 << 20);
	global_counter++;
	pthread_create(&th, NULL, spin, NULL);
	while (!started)
		usleep(1000);
	outer();
	return 0;
}
