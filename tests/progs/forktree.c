/* forktree N: a parent and N children, each child talking to the parent
 * over a socketpair of its own and sharing one pipe to it. Every tick the
 * parent sends each child a number over its socket (a child closes the
 * parent's ends of its elder siblings' sockets), the child answers it
 * plus one; the parent prints "forktree <pid> tick T ok" (BAD if an answer
 * was wrong). The first tick is printed as soon as every child answered
 * once, so the time to it is the time to set the tree up. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
	int n = argc > 1 ? atoi(argv[1]) : 10;
	int *sk = calloc(n, sizeof *sk);
	int pipefd[2];
	if (!sk || pipe(pipefd)) return 1;
	for (int i = 0; i < n; i++) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return 1;
		pid_t c = fork();
		if (c < 0) return 1;
		if (c == 0) {
			close(sv[0]);
			for (int j = 0; j < i; j++) close(sk[j]); /* the others' ends */
			for (;;) {
				long v;
				if (read(sv[1], &v, sizeof v) != sizeof v) _exit(0);
				v++;
				if (write(sv[1], &v, sizeof v) != sizeof v) _exit(0);
			}
		}
		close(sv[1]);
		sk[i] = sv[0];
	}
	for (long tick = 1;; tick++) {
		int ok = 1;
		for (int i = 0; i < n; i++) {
			long v = tick * 1000 + i, got = 0;
			if (write(sk[i], &v, sizeof v) != sizeof v || read(sk[i], &got, sizeof got) != sizeof got || got != v + 1)
				ok = 0;
		}
		printf("forktree %d tick %ld %s\n", getpid(), tick, ok ? "ok" : "BAD");
		fflush(stdout);
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
