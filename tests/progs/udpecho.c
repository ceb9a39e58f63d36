/* udpecho FAMILY: a UDP echo server (parent, P) bound on loopback (FAMILY
 * 4: 127.0.0.1, 6: ::1) and a client child (C) connected to it. Each 20 ms
 * round C sends datagram r (an 8-byte number then r % 7 bytes of 'a' + r %
 * 26) and P echoes every datagram it reads back to its source; P reads
 * one datagram a round one round behind, C reads one echo a round two
 * rounds behind, so a datagram always waits in each queue. Both check
 * number, length and bytes and print "<who> <pid> tick N ok|BAD". */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int mk(uint64_t r, unsigned char *b) {
	memcpy(b, &r, 8);
	int n = r % 7;
	memset(b + 8, 'a' + r % 26, n);
	return 8 + n;
}
static int good(uint64_t want, unsigned char *b, ssize_t n) {
	unsigned char w[64];
	int k = mk(want, w);
	return n == k && !memcmp(b, w, k);
}
static void msleep(long ms) {
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) != 0) {
	}
}

int main(int argc, char **argv) {
	int six = argc > 1 && atoi(argv[1]) == 6;
	struct sockaddr_storage ss = {0};
	socklen_t n = six ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	if (six) {
		((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_addr = in6addr_loopback;
	} else {
		((struct sockaddr_in *)&ss)->sin_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	}
	int s = socket(ss.ss_family, SOCK_DGRAM, 0);
	if (bind(s, (void *)&ss, n) || getsockname(s, (void *)&ss, &n)) return 1;
	unsigned char b[64];
	if (fork() == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(s);
		int c = socket(ss.ss_family, SOCK_DGRAM, 0);
		if (connect(c, (void *)&ss, n)) return 1;
		int ok = 1;
		for (uint64_t r = 0;; r++) {
			int k = mk(r, b);
			if (send(c, b, k, 0) != k) ok = 0;
			if (r >= 2) {
				ssize_t got = recv(c, b, sizeof b, 0);
				if (!good(r - 2, b, got)) ok = 0;
			}
			printf("C %d tick %lu %s\n", getpid(), (unsigned long)r, ok ? "ok" : "BAD");
			fflush(stdout);
			msleep(20);
		}
	}
	int ok = 1;
	for (uint64_t r = 0;; r++) {
		if (r >= 1) {
			struct sockaddr_storage from;
			socklen_t fl = sizeof from;
			ssize_t got = recvfrom(s, b, sizeof b, 0, (void *)&from, &fl);
			if (!good(r - 1, b, got)) ok = 0;
			if (got > 0 && sendto(s, b, got, 0, (void *)&from, fl) != got) ok = 0;
		}
		printf("P %d tick %lu %s\n", getpid(), (unsigned long)r, ok ? "ok" : "BAD");
		fflush(stdout);
		msleep(20);
	}
}
