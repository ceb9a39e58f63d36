/* tcpmany N: a parent and a child with N loopback TCP connections between
 * them (the parent listening, the child connecting), 1000 bytes queued
 * unread in each direction of each; N 0: no socket at all. Both then
 * print "<who> <pid> tick N ok" lines every 100 ms. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void tick(const char *who) {
	for (long t = 0;; t++) {
		printf("%s %d tick %ld ok\n", who, getpid(), t);
		fflush(stdout);
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

int main(int argc, char **argv) {
	int n = argc > 1 ? atoi(argv[1]) : 0;
	static char buf[1000];
	memset(buf, 'x', sizeof buf);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	int l = -1;
	if (n > 0) {
		l = socket(AF_INET, SOCK_STREAM, 0);
		if (bind(l, (void *)&a, sizeof a) || listen(l, 4096) || getsockname(l, (void *)&a, &len)) return 1;
	}
	int ready[2];
	if (pipe(ready)) return 1;
	if (fork() == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (int i = 0; i < n; i++) {
			int c = socket(AF_INET, SOCK_STREAM, 0);
			if (connect(c, (void *)&a, sizeof a) || write(c, buf, sizeof buf) != sizeof buf) return 1;
		}
		close(ready[1]);
		char x;
		if (read(ready[0], &x, 1) < 0) return 1;
		tick("C");
	}
	close(ready[0]);
	for (int i = 0; i < n; i++) {
		int s = accept(l, 0, 0);
		if (s < 0 || write(s, buf, sizeof buf) != sizeof buf) return 1;
	}
	close(ready[1]); /* the child ticks once every connection exists */
	tick("P");
}
