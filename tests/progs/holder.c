/* holder KIND: holds an fd ckptfs cannot checkpoint yet (tcp: a connected
 * TCP socket pair on loopback, uring: an io_uring instance, device: /dev/fuse,
 * pty: a pty master from /dev/ptmx),
 * then prints "holder <pid> tick N ok" every 100 ms. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 2) return 2;
	if (!strcmp(argv[1], "tcp")) {
		int l = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		socklen_t n = sizeof a;
		if (bind(l, (void *)&a, sizeof a) || listen(l, 1) || getsockname(l, (void *)&a, &n)) return 1;
		int c = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(c, (void *)&a, sizeof a)) return 1;
	} else if (!strcmp(argv[1], "uring")) {
		char params[120] = {0};
		if (syscall(__NR_io_uring_setup, 4, params) < 0) { perror("io_uring_setup"); return 1; }
	} else if (!strcmp(argv[1], "device")) {
		if (open("/dev/fuse", O_RDWR) < 0) { perror("/dev/fuse"); return 1; }
	} else if (!strcmp(argv[1], "pty")) {
		if (open("/dev/ptmx", O_RDWR | O_NOCTTY) < 0) { perror("/dev/ptmx"); return 1; }
	}
	for (long tick = 0;; tick++) {
		printf("holder %d tick %ld ok\n", getpid(), tick);
		fflush(stdout);
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
