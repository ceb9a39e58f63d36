/* ipc MODE: small programs for the process-tree and fd-kind tests. Each
 * prints "<mode> <pid> tick N ok|BAD" lines; BAD means it saw lost, extra or
 * reordered data, or an error it should not have seen.
 *   pair:   parent and child talk over a socketpair and a pipe; each message
 *           carries a sequence number, and every round leaves data in flight
 *           (written before the reader sleeps).
 *   loop:   one process: epoll over an eventfd and a timerfd (100 ms period);
 *           counts timer expirations and eventfd values it wrote itself.
 *   shm:    parent and child share MAP_SHARED|MAP_ANONYMOUS memory; the child
 *           increments a counter, the parent checks it moves and a pattern holds.
 *           A second shared region is written only by the child, which then
 *           drops its own page table entries (MADV_DONTNEED): the pages live
 *           on in the shared memory object, mapped by no process. After
 *           SIGUSR1 the parent checks that region too, every tick.
 *   deleted: opens a file, writes a pattern, unlinks it, then re-reads it. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *mode;
static volatile sig_atomic_t usr1, woken;
static void onusr1(int s) { (void)s; usr1 = woken = 1; }
static void say(long tick, int ok) {
	printf("%s %d tick %ld %s\n", mode, getpid(), tick, ok ? "ok" : "BAD");
	fflush(stdout);
}
static void msleep(long ms) {
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) != 0) {
		if (woken) { /* our own SIGUSR1: expected */
			woken = 0;
			continue;
		}
		printf("%s %d EINTR\n", mode, getpid());
		fflush(stdout);
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

static void pair(void) {
	int sv[2], pp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || pipe(pp)) exit(1);
	pid_t kid = fork();
	if (kid == 0) { /* child: echo socket messages back through the pipe */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(sv[0]); close(pp[0]);
		for (;;) { /* the messages wait in the socket meanwhile */
			uint64_t v[4];
			msleep(50);
			if (readfull(sv[1], v, sizeof v)) exit(0);
			for (int i = 0; i < 4; i++) v[i] += 1000000;
			if (write(pp[1], v, sizeof v) != sizeof v) exit(0);
		}
	}
	close(sv[1]); close(pp[1]);
	uint64_t seq = 0;
	for (long tick = 0;; tick++) {
		int ok = 1;
		for (int i = 0; i < 4; i++) { uint64_t v = seq + i; if (write(sv[0], &v, 8) != 8) ok = 0; }
		msleep(100); /* the replies wait in the pipe meanwhile */
		for (int i = 0; i < 4; i++) {
			uint64_t v;
			if (readfull(pp[0], &v, 8) || v != seq + i + 1000000) ok = 0;
		}
		seq += 4;
		say(tick, ok);
	}
}

static void loop(void) {
	int ep = epoll_create1(0), ev = eventfd(0, EFD_NONBLOCK), tf = timerfd_create(CLOCK_MONOTONIC, 0);
	struct itimerspec its = {{0, 100000000}, {0, 100000000}};
	timerfd_settime(tf, 0, &its, NULL);
	struct epoll_event e = {.events = EPOLLIN, .data.u64 = 1};
	epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e);
	e.data.u64 = 2;
	epoll_ctl(ep, EPOLL_CTL_ADD, tf, &e);
	uint64_t wrote = 0, got = 0;
	for (long tick = 0;; tick++) {
		uint64_t one = 1;
		write(ev, &one, 8); /* stays pending until the next wait */
		wrote++;
		int ok = 1, timer = 0;
		while (!timer) {
			struct epoll_event out[2];
			int n = epoll_wait(ep, out, 2, 5000);
			if (n <= 0) { ok = 0; break; }
			for (int i = 0; i < n; i++) {
				uint64_t v;
				if (out[i].data.u64 == 1 && read(ev, &v, 8) == 8) got += v;
				else if (out[i].data.u64 == 2 && read(tf, &v, 8) == 8) timer = 1;
				else if (out[i].data.u64 != 1) ok = 0;
			}
		}
		say(tick, ok && got == wrote);
	}
}

static void shm(void) {
	size_t len = 8 << 20;
	uint64_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	for (size_t i = 1; i < len / 8; i++) m[i] = i * 0x9e3779b97f4a7c15ULL;
	size_t hlen = 1 << 20;
	uint64_t *h = mmap(NULL, hlen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	signal(SIGUSR1, onusr1);
	if (fork() == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (size_t i = 0; i < hlen / 8; i++) h[i] = ~i;
		madvise(h, hlen, MADV_DONTNEED); /* shared: the pages stay in the object */
		for (;;) { m[0]++; msleep(20); }
	}
	uint64_t last = 0;
	for (long tick = 0;; tick++) {
		msleep(100);
		int ok = m[0] > last;
		last = m[0];
		for (size_t i = 1; i < len / 8; i += 509) ok &= m[i] == i * 0x9e3779b97f4a7c15ULL;
		if (usr1)
			for (size_t i = 0; i < hlen / 8; i += 61) ok &= h[i] == ~i;
		say(tick, ok);
	}
}

static void deleted(void) {
	char path[] = "/tmp/ckptfs-deleted-XXXXXX";
	int fd = mkstemp(path);
	char buf[8192];
	for (size_t i = 0; i < sizeof buf; i++) buf[i] = (char)(i * 13);
	write(fd, buf, sizeof buf);
	unlink(path);
	for (long tick = 0;; tick++) {
		char got[8192];
		int ok = pread(fd, got, sizeof got, 0) == sizeof got && !memcmp(got, buf, sizeof buf);
		say(tick, ok);
		msleep(100);
	}
}

int main(int argc, char **argv) {
	mode = argc > 1 ? argv[1] : "pair";
	if (!strcmp(mode, "pair")) pair();
	if (!strcmp(mode, "loop")) loop();
	if (!strcmp(mode, "shm")) shm();
	if (!strcmp(mode, "deleted")) deleted();
	return 2;
}
