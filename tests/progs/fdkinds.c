/* fdkinds DIR [proc]: holds the fd kinds of tests/fdkinds_test.go, then checks them
 * once DIR/go exists (the test creates it after the restore). Prints
 * "fdkinds <pid> ... ok|BAD" lines; BAD means lost, extra or wrong state.
 *   inotify:  watches DIR/wdir (IN_CREATE) and DIR/watched (IN_MODIFY) with
 *             wds 1 and 3 (2 was added on DIR/gap and removed again).
 *   timerfd:  10 ms period, never read before the check: its count must be
 *             at least the expirations the checkpoint recorded.
 *   fifo:     DIR/fifo open for reading and writing, 14 bytes in flight.
 *   signalfd: SIGUSR1 (process-wide) and SIGUSR2 (thread) blocked and pending.
 *   eventfd:  dup'ed, and shared with a forked child (which also shares every
 *             fd above): the child adds 7 after the check starts, the parent 1
 *             through the dup; the parent must read 8.
 * With "proc", /proc/uptime is watched too: a dump must refuse that watch. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static const char *dir;
static int bad;

static void say(const char *what, int ok) {
	printf("fdkinds %d %s %s\n", getpid(), what, ok ? "ok" : "BAD");
	fflush(stdout);
	if (!ok) bad = 1;
}

static char *at(const char *name) {
	static char buf[8][PATH_MAX];
	static int n;
	char *p = buf[n++ % 8];
	snprintf(p, PATH_MAX, "%s/%s", dir, name);
	return p;
}

static void msleep(long ms) {
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) != 0) {
	}
}

static const char fifomsg[] = "fifo-bytes-123";

int main(int argc, char **argv) {
	if (argc < 2) return 2;
	dir = argv[1];
	char line[PATH_MAX + 128];
	mkdir(at("wdir"), 0755);
	close(open(at("watched"), O_CREAT | O_WRONLY, 0644));
	close(open(at("gap"), O_CREAT | O_WRONLY, 0644));
	unlink(at("fifo"));
	if (mkfifo(at("fifo"), 0644)) return 3;

	int in = inotify_init1(IN_NONBLOCK);
	int wd1 = inotify_add_watch(in, at("wdir"), IN_CREATE);
	int wd2 = inotify_add_watch(in, at("gap"), IN_ATTRIB);
	int wd3 = inotify_add_watch(in, at("watched"), IN_MODIFY);
	inotify_rm_watch(in, wd2);
	char ev[4096];
	while (read(in, ev, sizeof ev) > 0) { /* the IN_IGNORED of wd2 */
	}

	int tf = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	struct itimerspec its = {{0, 10000000}, {0, 10000000}};
	timerfd_settime(tf, 0, &its, NULL);

	int fr = open(at("fifo"), O_RDONLY | O_NONBLOCK);
	int fw = open(at("fifo"), O_WRONLY);
	if (write(fw, fifomsg, sizeof fifomsg - 1) != sizeof fifomsg - 1) return 4;

	sigset_t ss;
	sigemptyset(&ss);
	sigaddset(&ss, SIGUSR1);
	sigaddset(&ss, SIGUSR2);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	int sf = signalfd(-1, &ss, SFD_NONBLOCK);
	int efd = eventfd(0, EFD_NONBLOCK), efd2 = dup(efd);
	struct stat st;
	pid_t kid = fork();
	if (kid == 0) {
		while (stat(at("go"), &st) != 0) msleep(50);
		uint64_t v = 7;
		if (write(efd, &v, 8) != 8) say("child-eventfd-write", 0);
		for (;;) pause();
	}
	kill(getpid(), SIGUSR1);
	raise(SIGUSR2);

	snprintf(line, sizeof line,
	         "fds inotify=%d timerfd=%d fifo_r=%d fifo_w=%d signalfd=%d eventfd=%d eventfd_dup=%d kid=%d wds=%d,%d,%d", in,
	         tf, fr, fw, sf, efd, efd2, kid, wd1, wd2, wd3);
	say(line, wd1 == 1 && wd2 == 2 && wd3 == 3);
	if (argc > 2 && strcmp(argv[2], "proc") == 0) /* procfs cannot open file handles */
		say("proc-watch", inotify_add_watch(in, "/proc/uptime", IN_MODIFY) == 4);

	long tick = 0;
	while (stat(at("go"), &st) != 0) {
		snprintf(line, sizeof line, "tick %ld", ++tick);
		say(line, 1);
		msleep(100);
	}

	/* timerfd: every expiration since it was armed (>= the recorded count). */
	uint64_t n = 0;
	int ok = read(tf, &n, 8) == 8;
	snprintf(line, sizeof line, "timerfd-read %llu", (unsigned long long)n);
	say(line, ok && n > 0);
	msleep(30);
	ok = read(tf, &n, 8) == 8;
	snprintf(line, sizeof line, "timerfd-again %llu", (unsigned long long)n);
	say(line, ok && n > 0);

	/* fifo: the bytes in flight, and the fds are still the named FIFO. */
	char buf[64] = {0};
	ssize_t k = read(fr, buf, sizeof buf - 1);
	snprintf(line, sizeof line, "fifo-data %zd [%s]", k, k > 0 ? buf : "");
	say(line, k == sizeof fifomsg - 1 && memcmp(buf, fifomsg, k) == 0);
	char link[PATH_MAX] = {0}, proc[64];
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fr);
	ssize_t ll = readlink(proc, link, sizeof link - 1);
	struct stat fst;
	ok = ll > 0 && strcmp(link, at("fifo")) == 0 && fstat(fr, &fst) == 0 && S_ISFIFO(fst.st_mode) &&
	     stat(at("fifo"), &st) == 0 && st.st_ino == fst.st_ino;
	snprintf(line, sizeof line, "fifo-named %s", link);
	say(line, ok);
	ok = write(fw, "x", 1) == 1 && read(fr, buf, sizeof buf) == 1 && buf[0] == 'x';
	say("fifo-roundtrip", ok);

	/* signalfd: both pending signals. */
	int got1 = 0, got2 = 0;
	struct signalfd_siginfo si;
	while (read(sf, &si, sizeof si) == sizeof si) {
		if (si.ssi_signo == SIGUSR1) got1++;
		else if (si.ssi_signo == SIGUSR2) got2++;
		else got1 = got2 = 100;
	}
	snprintf(line, sizeof line, "signalfd usr1=%d usr2=%d", got1, got2);
	say(line, got1 == 1 && got2 == 1);

	/* inotify: events come with the recorded wds, and nothing else. */
	int fd = open(at("watched"), O_WRONLY | O_APPEND);
	ok = write(fd, "m", 1) == 1;
	close(fd);
	close(open(at("wdir/new"), O_CREAT | O_WRONLY, 0644));
	int seen1 = 0, seen3 = 0, other = 0;
	struct pollfd pfd = {in, POLLIN, 0};
	for (int i = 0; i < 10 && !(seen1 && seen3); i++) {
		poll(&pfd, 1, 100);
		ssize_t len = read(in, ev, sizeof ev);
		for (char *p = ev; len > 0 && p < ev + len;) {
			struct inotify_event *e = (struct inotify_event *)p;
			if (e->wd == wd1 && (e->mask & IN_CREATE) && e->len && strcmp(e->name, "new") == 0) seen1++;
			else if (e->wd == wd3 && (e->mask & IN_MODIFY)) seen3++;
			else {
				printf("fdkinds %d unexpected inotify event wd %d mask %#x\n", getpid(), e->wd, e->mask);
				other++;
			}
			p += sizeof *e + e->len;
		}
	}
	snprintf(line, sizeof line, "inotify wd1=%d wd3=%d other=%d", seen1, seen3, other);
	say(line, ok && seen1 == 1 && seen3 == 1 && other == 0);
	int wd4 = inotify_add_watch(in, at("gap"), IN_ATTRIB);
	snprintf(line, sizeof line, "inotify-next-wd %d", wd4);
	say(line, wd4 == 4);

	/* eventfd: one counter behind the dup and the child's copy. */
	uint64_t one = 1, total = 0, v;
	ok = write(efd2, &one, 8) == 8;
	for (int i = 0; i < 30 && total < 8; i++) {
		if (read(efd, &v, 8) == 8) total += v;
		else msleep(100);
	}
	snprintf(line, sizeof line, "eventfd-shared total=%llu", (unsigned long long)total);
	say(line, ok && total == 8);

	say("done", !bad);
	for (;;) {
		snprintf(line, sizeof line, "tick %ld", ++tick);
		say(line, 1);
		msleep(100);
	}
}
