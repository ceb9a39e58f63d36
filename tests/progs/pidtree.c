/* pidtree: a parent and a child it forked and exec'd, each checking its
 * own ids every tick: getpid() against the pid it started with and against
 * /proc/self; the parent also its child's ppid in /proc/<child>/stat, the
 * child getppid(). Every PERIOD ms the parent sends its child a byte over a
 * pipe, the child answers 'o' (its checks passed) or 'B', and the parent
 * prints "pidtree <pid> tick N ok|BAD". When the child dies the parent
 * reaps it with waitpid(child), prints "pidtree <pid> child <child> exited
 * <wait status>" and exits 7. Each tick the parent also checks that the
 * child is its own, still running (waitpid(child, WNOHANG) returns 0).
 * usage: pidtree PERIOD_MS    (the child: pidtree -child RFD WFD PPID) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int self_ok(pid_t want) {
	char buf[64] = {0};
	if (getpid() != want) return 0;
	ssize_t n = readlink("/proc/self", buf, sizeof buf - 1);
	if (n <= 0) return 0;
	return atoi(buf) == want;
}

static int child_main(int rfd, int wfd, pid_t parent) {
	pid_t me = getpid();
	char c;
	while (read(rfd, &c, 1) == 1) {
		char ok = self_ok(me) && getppid() == parent ? 'o' : 'B';
		if (write(wfd, &ok, 1) != 1) return 1;
	}
	return 0;
}

static int ppid_of(pid_t pid) {
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f) return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	int ppid = -1;
	if (!p || sscanf(p + 2, "%*c %d", &ppid) != 1) return -1;
	return ppid;
}

int main(int argc, char **argv) {
	if (argc == 5 && strcmp(argv[1], "-child") == 0)
		return child_main(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
	long period = argc > 1 ? atol(argv[1]) : 100;
	signal(SIGPIPE, SIG_IGN); /* a dead child: EPIPE, then waitpid */
	int p2c[2], c2p[2];
	if (pipe(p2c) || pipe(c2p)) return 1;
	pid_t me = getpid();
	pid_t child = fork();
	if (child < 0) return 1;
	if (child == 0) {
		char r[16], w[16], pp[16];
		close(p2c[1]);
		close(c2p[0]);
		snprintf(r, sizeof r, "%d", p2c[0]);
		snprintf(w, sizeof w, "%d", c2p[1]);
		snprintf(pp, sizeof pp, "%d", me);
		execl("/proc/self/exe", argv[0], "-child", r, w, pp, (char *)NULL);
		_exit(127);
	}
	close(p2c[0]);
	close(c2p[1]);
	for (long tick = 0;; tick++) {
		char c = 't', ans = 0;
		int ok = write(p2c[1], &c, 1) == 1 && read(c2p[0], &ans, 1) == 1;
		if (!ok) {
			int st = 0;
			pid_t got = waitpid(child, &st, 0);
			printf("pidtree %d child %d exited %d%s\n", getpid(), child, st, got == child ? "" : " (not reaped)");
			fflush(stdout);
			return 7;
		}
		int st;
		ok = ans == 'o' && self_ok(me) && ppid_of(child) == me && waitpid(child, &st, WNOHANG) == 0;
		printf("pidtree %d tick %ld %s\n", getpid(), tick, ok ? "ok" : "BAD");
		fflush(stdout);
		struct timespec ts = {period / 1000, (period % 1000) * 1000000};
		while (nanosleep(&ts, &ts) != 0)
			;
	}
}
