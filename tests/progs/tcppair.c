/* tcppair FAMILY MIB: a parent listening on loopback (FAMILY 4: 127.0.0.1,
 * 6: ::1) and a child connected to it; each streams MIB MiB to the other
 * while reading the other's stream slower than it writes, so bytes wait in
 * both directions' queues all along. Every byte is checked: stream S byte
 * i is pat(S, i). Each process prints "<who> <pid> tick N ok|BAD" lines
 * (P parent, C child; the line ends with ok or BAD), "<who> <pid> done ok" once it has sent and received
 * every byte, then ticks on; "<who> <pid> reset ok" if the connection
 * was reset (then it waits). Each round sends up to 128 KiB, reads up to
 * 32 KiB and sleeps 20 ms. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

static unsigned char pat(int s, unsigned long i) { return (unsigned char)(i * 7 + s * 13 + (i >> 16)); }

static void msleep(long ms) {
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) != 0) {
	}
}

static void run(const char *who, int fd, int out, int in, unsigned long total) {
	unsigned long sent = 0, got = 0;
	int ok = 1, done = 0;
	static unsigned char buf[128 << 10];
	fcntl(fd, F_SETFL, O_NONBLOCK);
	for (long tick = 0;; tick++) {
		if (sent < total) {
			size_t n = sizeof buf;
			if (total - sent < n) n = total - sent;
			for (size_t k = 0; k < n; k++) buf[k] = pat(out, sent + k);
			ssize_t w = write(fd, buf, n);
			if (w > 0) sent += w;
			else if (w < 0 && errno == ECONNRESET) {
				printf("%s %d reset ok\n", who, getpid());
				fflush(stdout);
				pause();
			} else if (w < 0 && errno != EAGAIN) ok = 0;
		}
		if (got < total) {
			ssize_t r = read(fd, buf, 32 << 10);
			if (r > 0) {
				for (ssize_t k = 0; k < r; k++)
					if (buf[k] != pat(in, got + k)) ok = 0;
				got += r;
			} else if (r < 0 && errno == ECONNRESET) {
				printf("%s %d reset ok\n", who, getpid());
				fflush(stdout);
				pause();
			} else if (r == 0 || errno != EAGAIN) {
				ok = 0;
			}
		}
		printf("%s %d tick %ld sent %lu got %lu %s\n", who, getpid(), tick, sent, got, ok ? "ok" : "BAD");
		if (!done && sent == total && got == total) {
			printf("%s %d done %s\n", who, getpid(), ok ? "ok" : "BAD");
			done = 1;
		}
		fflush(stdout);
		msleep(20);
	}
}

int main(int argc, char **argv) {
	if (argc < 3) return 2;
	int six = atoi(argv[1]) == 6;
	unsigned long total = strtoul(argv[2], 0, 10) << 20;
	struct sockaddr_storage ss = {0};
	socklen_t n = six ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	if (six) {
		struct sockaddr_in6 *a = (void *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
	} else {
		struct sockaddr_in *a = (void *)&ss;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	}
	int l = socket(ss.ss_family, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(l, (void *)&ss, n) || listen(l, 8) || getsockname(l, (void *)&ss, &n)) {
		perror("listen");
		return 1;
	}
	pid_t c = fork();
	if (c == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(l);
		int fd = socket(ss.ss_family, SOCK_STREAM, 0);
		if (connect(fd, (void *)&ss, n)) {
			perror("connect");
			return 1;
		}
		run("C", fd, 1, 0, total);
	}
	int fd = accept(l, 0, 0);
	if (fd < 0) {
		perror("accept");
		return 1;
	}
	run("P", fd, 0, 1, total);
	return 0;
}
