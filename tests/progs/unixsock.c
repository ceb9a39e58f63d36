/* unixsock MODE ARG: programs for the unix socket tests. Each process
 * prints "<who> <pid> tick N ok|BAD" lines; BAD means lost, extra or
 * reordered data, or an error it should not have seen.
 *   server DIR: a server listening on DIR/sock (stream) and bound to
 *       DIR/dgram (datagrams), with three children:
 *       A  connected and accepted at once: sends 2 numbers a round and
 *          reads the replies (number + 1000000); A and the server both
 *          leave the last 8 bytes unread, so bytes always wait both ways;
 *       B  connected but not accepted until the file DIR/open exists; then
 *          the server greets it with 42 and it talks like A, one number
 *          a round;
 *       C  a datagram client bound to DIR/dgram-client: sends 3 datagrams
 *          of varying length (0 too) a round and reads the 3 replies (every
 *          byte + 1) of the round before, which must keep their boundaries
 *          and order: replies always wait in its queue.
 *       The server (S) sleeps 50 ms between rounds so data waits in its
 *       queues too; it greets every connection accepted after DIR/open
 *       with 42 and answers each 8-byte number n with n + 1000000.
 *   outside PATH: connects to a listener at PATH (outside the dumped tree)
 *       and ticks; outside-dgram PATH: the same with a datagram socket
 *       connected to a datagram socket bound to PATH (as to /dev/log). */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static void say(const char *who, long tick, int ok) {
	printf("%s %d tick %ld %s\n", who, getpid(), tick, ok ? "ok" : "BAD");
	fflush(stdout);
}
static void msleep(long ms) {
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) != 0) {
	}
}
static int readfull(int fd, void *b, size_t n) {
	for (size_t got = 0; got < n;) {
		ssize_t k = read(fd, (char *)b + got, n - got);
		if (k <= 0) return -1;
		got += k;
	}
	return 0;
}
static struct sockaddr_un addr(const char *dir, const char *name) {
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof a.sun_path, "%s/%s", dir, name);
	return a;
}
static int sock(int type) {
	int fd = socket(AF_UNIX, type, 0);
	if (fd < 0) { perror("socket"); exit(1); }
	return fd;
}
static int connect_to(const char *dir, const char *name) {
	int fd = sock(SOCK_STREAM);
	struct sockaddr_un a = addr(dir, name);
	if (connect(fd, (struct sockaddr *)&a, sizeof a)) { perror("connect"); exit(1); }
	return fd;
}
static void child(void) { prctl(PR_SET_PDEATHSIG, SIGKILL); }

/* A and the server each leave the last 8 bytes sent to them unread
 * (FIONREAD), so bytes always wait in both directions. */
static int queued(int fd) {
	int q = 0;
	if (ioctl(fd, FIONREAD, &q)) return -1;
	return q;
}
static void client_a(const char *dir) {
	int fd = connect_to(dir, "sock");
	uint64_t next = 0, want = 1000000;
	int idle = 0;
	for (long tick = 0;; tick++) {
		int ok = 1, got = 0;
		for (int i = 0; i < 2; i++) { uint64_t v = next++; if (write(fd, &v, 8) != 8) ok = 0; }
		msleep(100);
		while (queued(fd) > 8) {
			uint64_t v;
			if (readfull(fd, &v, 8) || v != want++) ok = 0;
			got++;
		}
		if (got == 0 && ++idle > 10) ok = 0; /* stuck */
		if (got) idle = 0;
		say("A", tick, ok);
	}
}

static void client_b(const char *dir) {
	int fd = connect_to(dir, "sock");
	uint64_t v;
	if (readfull(fd, &v, 8)) exit(1); /* waits until the server accepts us */
	say("B", 0, v == 42);
	for (long tick = 1;; tick++) {
		uint64_t w = tick * 7;
		int ok = write(fd, &w, 8) == 8 && readfull(fd, &v, 8) == 0 && v == w + 1000000;
		say("B", tick, ok);
		msleep(100);
	}
}

static void client_c(const char *dir) {
	int fd = sock(SOCK_DGRAM);
	struct sockaddr_un me = addr(dir, "dgram-client"), srv = addr(dir, "dgram");
	unlink(me.sun_path);
	if (bind(fd, (struct sockaddr *)&me, sizeof me)) { perror("bind"); exit(1); }
	unsigned seq = 0;
	for (long tick = 0;; tick++, seq += 3) {
		int ok = 1;
		unsigned char b[64];
		for (int i = 0; i < 3; i++) {
			size_t n = (seq + i) % 37; /* 0 too: an empty datagram */
			memset(b, (seq + i) & 0x7f, n);
			if (sendto(fd, b, n, 0, (struct sockaddr *)&srv, sizeof srv) != (ssize_t)n) ok = 0;
		}
		msleep(100);
		if (tick == 0) continue; /* read a round late: replies always wait */
		for (int i = -3; i < 0; i++) {
			size_t n = (seq + i) % 37;
			ssize_t k = recv(fd, b, sizeof b, 0);
			if (k != (ssize_t)n) { ok = 0; continue; }
			for (size_t j = 0; j < n; j++)
				if (b[j] != (((seq + i) & 0x7f) + 1)) ok = 0;
		}
		say("C", tick, ok);
	}
}

static void server(const char *dir) {
	int l = sock(SOCK_STREAM), d = sock(SOCK_DGRAM);
	struct sockaddr_un a = addr(dir, "sock"), da = addr(dir, "dgram");
	if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 8)) { perror("listen"); exit(1); }
	if (bind(d, (struct sockaddr *)&da, sizeof da)) { perror("bind"); exit(1); }
	int conns[64], n = 0;
	if (fork() == 0) { child(); client_a(dir); }
	conns[n++] = accept(l, NULL, NULL); /* A first: B stays waiting */
	if (fork() == 0) { child(); client_b(dir); }
	if (fork() == 0) { child(); client_c(dir); }
	char open_path[200];
	snprintf(open_path, sizeof open_path, "%s/open", dir);
	int ok = 1;
	for (long round = 0;; round++) {
		msleep(50);
		if (access(open_path, F_OK) == 0) {
			struct pollfd p = {l, POLLIN, 0};
			while (n < 64 && poll(&p, 1, 0) == 1) {
				int c = accept(l, NULL, NULL);
				uint64_t hi = 42;
				if (c < 0 || write(c, &hi, 8) != 8) ok = 0;
				else conns[n++] = c;
			}
		}
		for (int i = 0; i < n; i++) {
			struct pollfd p = {conns[i], POLLIN, 0};
			while (conns[i] >= 0 && poll(&p, 1, 0) == 1 && (i > 0 || queued(conns[i]) > 8)) {
				uint64_t v;
				if (readfull(conns[i], &v, 8)) { close(conns[i]); conns[i] = -1; break; }
				v += 1000000;
				if (write(conns[i], &v, 8) != 8) ok = 0;
			}
		}
		for (;;) {
			unsigned char b[64];
			struct sockaddr_un from;
			socklen_t fl = sizeof from;
			ssize_t k = recvfrom(d, b, sizeof b, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
			if (k < 0) { if (errno != EAGAIN) ok = 0; break; }
			for (ssize_t j = 0; j < k; j++) b[j]++;
			if (sendto(d, b, k, 0, (struct sockaddr *)&from, fl) != k) ok = 0;
		}
		if (round % 4 == 0) say("S", round / 4, ok);
	}
}

/* variety DIR: parent P and child K share
 *   a named stream pair: K's socket is bound to DIR/cli and connected to an
 *       abstract listener of P, which accepted it and closed the listener;
 *       both check their names each round and exchange numbers with the
 *       last 8 bytes left unread (as A does);
 *   a seqpacket pair: P sends 2 records a round, K reads 2 a round a bit
 *       slower, checking length and contents: records wait in K's queue;
 *   a datagram pair: the same with K sending and P reading;
 * and a datagram socket bound to "rel" from cwd DIR (getsockname says "rel")
 * with SO_PASSCRED and a smaller SO_RCVBUF;
 * and P holds a stream socket whose peer it closed after writing "goodbye"
 * into it: when DIR/read-closed exists, P reads it: "goodbye", then EOF. */
static int same_name(int fd, int peer, const char *want, int len) {
	struct sockaddr_un a;
	socklen_t l = sizeof a;
	int r = peer ? getpeername(fd, (struct sockaddr *)&a, &l) : getsockname(fd, (struct sockaddr *)&a, &l);
	return r == 0 && (int)(l - offsetof(struct sockaddr_un, sun_path)) == len && memcmp(a.sun_path, want, len) == 0;
}
static void record(unsigned char *b, unsigned seq, size_t *n) {
	*n = 1 + seq % 50;
	memset(b, seq & 0xff, *n);
}
static void variety(const char *dir) {
	struct sockaddr_un abs = {.sun_family = AF_UNIX}, cli = addr(dir, "cli");
	int abslen = snprintf(abs.sun_path + 1, sizeof abs.sun_path - 1, "ckptfs-test-%d", getpid()) + 1;
	socklen_t abssz = offsetof(struct sockaddr_un, sun_path) + abslen;
	int clilen = strlen(cli.sun_path) + 1;
	int l = sock(SOCK_STREAM), sp[2], dp[2], cp[2];
	if (bind(l, (struct sockaddr *)&abs, abssz) || listen(l, 1)) { perror("listen"); exit(1); }
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp) || socketpair(AF_UNIX, SOCK_DGRAM, 0, dp) ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, cp)) { perror("socketpair"); exit(1); }
	if (write(cp[1], "goodbye", 7) != 7) exit(1);
	close(cp[1]);
	unlink(cli.sun_path);
	/* a datagram socket bound to a relative name, from cwd DIR */
	int rel = sock(SOCK_DGRAM);
	struct sockaddr_un rela = {.sun_family = AF_UNIX, .sun_path = "rel"};
	if (chdir(dir) || bind(rel, (struct sockaddr *)&rela, sizeof rela)) { perror("bind rel"); exit(1); }
	int one = 1, rcvbuf = 50000, rcvbuf_got = 0;
	socklen_t ol = sizeof rcvbuf_got;
	if (setsockopt(rel, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) || setsockopt(rel, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) ||
	    getsockopt(rel, SOL_SOCKET, SO_RCVBUF, &rcvbuf_got, &ol)) { perror("setsockopt"); exit(1); }
	int named;
	pid_t kid = fork();
	if (kid == 0) {
		child();
		close(l); close(sp[0]); close(dp[0]); close(cp[0]);
		named = sock(SOCK_STREAM);
		if (bind(named, (struct sockaddr *)&cli, sizeof cli) || connect(named, (struct sockaddr *)&abs, abssz)) { perror("connect"); exit(1); }
	} else {
		close(sp[1]); close(dp[1]);
		named = accept(l, NULL, NULL);
		close(l);
	}
	int me = kid == 0;
	uint64_t next = 0, want = 0;
	unsigned wseq = 0, rseq = 0;
	int idle = 0, closed_done = 0;
	char trigger[200];
	snprintf(trigger, sizeof trigger, "%s/read-closed", dir);
	for (long tick = 0;; tick++) {
		int ok = 1, got = 0;
		unsigned char b[64];
		size_t n;
		/* names, as before the dump */
		ok &= same_name(named, !me, cli.sun_path, clilen) && same_name(named, me, abs.sun_path, abslen);
		ok &= same_name(rel, 0, "rel", 4);
		int v = 0;
		socklen_t vl = sizeof v;
		ok &= getsockopt(rel, SOL_SOCKET, SO_PASSCRED, &v, &vl) == 0 && v == 1;
		ok &= getsockopt(rel, SOL_SOCKET, SO_RCVBUF, &v, &vl) == 0 && v == rcvbuf_got;
		/* the named pair: P and K both send and both leave 8 bytes unread */
		for (int i = 0; i < 2; i++) { uint64_t v = next++ + (me ? 1000000 : 0); if (write(named, &v, 8) != 8) ok = 0; }
		/* the seqpacket pair (P writes) and the datagram pair (K writes) */
		int w = me ? dp[1] : sp[0], r = me ? sp[1] : dp[0];
		for (int i = 0; i < 2; i++) {
			record(b, wseq++, &n);
			if (write(w, b, n) != (ssize_t)n) ok = 0;
		}
		msleep(me ? 110 : 105);
		while (queued(named) > 8) {
			uint64_t v;
			if (readfull(named, &v, 8) || v != want++ + (me ? 0 : 1000000)) ok = 0;
			got++;
		}
		if (got == 0 && ++idle > 10) ok = 0;
		if (got) idle = 0;
		if (tick > 0) { /* a round late, and slower than the writer */
			for (int i = 0; i < 2; i++) {
				unsigned char want_b[64];
				size_t wn;
				record(want_b, rseq++, &wn);
				ssize_t k = recv(r, b, sizeof b, 0);
				if (k != (ssize_t)wn || memcmp(b, want_b, wn)) ok = 0;
			}
		}
		if (!me && !closed_done && access(trigger, F_OK) == 0) {
			char c[16];
			ssize_t k = read(cp[0], c, sizeof c);
			ok &= k == 7 && memcmp(c, "goodbye", 7) == 0 && read(cp[0], c, sizeof c) == 0;
			closed_done = 1;
			printf("P %d closed %s\n", getpid(), ok ? "ok" : "BAD");
		}
		say(me ? "K" : "P", tick, ok);
	}
}

/* eager DIR: a listener on DIR/sock (fd 3) whose child connected and
 * sent 8 bytes, never accepted. rights DIR: a socketpair (fd 3, 4) with an
 * fd in flight (SCM_RIGHTS) from 4 to 3. Both then tick; at each tick the
 * parent checks that what waits is still there. */
static void eager(const char *dir) {
	int l = sock(SOCK_STREAM);
	struct sockaddr_un a = addr(dir, "sock");
	if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 4)) { perror("listen"); exit(1); }
	if (fork() == 0) {
		child();
		int fd = connect_to(dir, "sock");
		uint64_t v = 7;
		if (write(fd, &v, 8) != 8) exit(1);
		for (;;) pause();
	}
	for (long tick = 0;; tick++) {
		struct pollfd p = {l, POLLIN, 0};
		say("E", tick, tick < 3 || poll(&p, 1, 0) == 1);
		msleep(100);
	}
}
static void rights(void) {
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) exit(1);
	char c = 'x', cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec io = {&c, 1};
	struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	int one = 1;
	memcpy(CMSG_DATA(cm), &one, sizeof one);
	if (sendmsg(sv[1], &m, 0) != 1) exit(1);
	for (long tick = 0;; tick++) {
		say("R", tick, queued(sv[0]) == 1);
		msleep(100);
	}
}

/* prefork DIR: a listener on DIR/sock shared by the parent and 2 worker
 * children, each blocked in accept(); a worker greets a connection with 42,
 * answers each 8-byte number n with n + 1000000 until EOF, then accepts
 * again. The parent ticks. */
static void prefork(const char *dir) {
	int l = sock(SOCK_STREAM);
	struct sockaddr_un a = addr(dir, "sock");
	if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 8)) { perror("listen"); exit(1); }
	for (int i = 0; i < 2; i++) {
		if (fork() == 0) {
			child();
			for (;;) {
				int c = accept(l, NULL, NULL);
				uint64_t v = 42;
				if (c < 0 || write(c, &v, 8) != 8) { printf("W %d accept BAD\n", getpid()); fflush(stdout); continue; }
				while (readfull(c, &v, 8) == 0) {
					v += 1000000;
					if (write(c, &v, 8) != 8) break;
				}
				close(c);
			}
		}
	}
	for (long tick = 0;; tick++) {
		say("S", tick, 1);
		msleep(100);
	}
}

int main(int argc, char **argv) {
	if (argc != 3) { fprintf(stderr, "usage: unixsock server|variety|prefork|eager|rights DIR | outside PATH\n"); return 2; }
	if (!strcmp(argv[1], "server")) server(argv[2]);
	if (!strcmp(argv[1], "variety")) variety(argv[2]);
	if (!strcmp(argv[1], "eager")) eager(argv[2]);
	if (!strcmp(argv[1], "prefork")) prefork(argv[2]);
	if (!strcmp(argv[1], "rights")) rights();
	if (!strcmp(argv[1], "outside") || !strcmp(argv[1], "outside-dgram")) {
		int fd = sock(argv[1][7] ? SOCK_DGRAM : SOCK_STREAM);
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		snprintf(a.sun_path, sizeof a.sun_path, "%s", argv[2]);
		if (connect(fd, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
		for (long tick = 0;; tick++) { say("O", tick, 1); msleep(100); }
	}
	return 2;
}
