// session: process trees with sessions, process groups and a terminal,
// for the session tests (tests/session_test.go).
//
//   session tty     the root (started as a session leader on a terminal)
//                   echoes every line of stdin as "echo N <line> ok" and
//                   prints ticks; child "same" stays in its group, child
//                   "bg" leads a group of its own; both print ticks.
//   session groups  the root (a session leader, no terminal) with child
//                   "same" in its group, child "lead" leading a group with
//                   grandchild "gc" in it, child "join" that joined the
//                   group of "lead", and child "sess" leading a session of
//                   its own with grandchild "sgc" in it. All print ticks.
//
// Every line is written with one write(2); ticks look like
// "<role> <pid> tick <n> ok".
#include <errno.h>
#include <stdarg.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...) {
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof buf - 1)
		n = sizeof buf - 1;
	for (int off = 0; off < n;) {
		ssize_t w = write(1, buf + off, n - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		off += w;
	}
}

static void sleep_ms(int ms) {
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
	}
}

// ticker prints a tick every 100 ms forever.
static void ticker(const char *role) {
	for (long n = 1;; n++) {
		say("%s %d tick %ld ok\n", role, getpid(), n);
		sleep_ms(100);
	}
}

static pid_t child(const char *role, void (*setup)(void)) {
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid == 0) {
		if (setup)
			setup();
		ticker(role);
	}
	return pid;
}

static void own_group(void) {
	if (setpgid(0, 0) < 0)
		say("setpgid failed\n");
}

static pid_t lead_pid;
static void join_lead(void) {
	if (setpgid(0, lead_pid) < 0)
		say("join setpgid failed\n");
}

static void lead_with_grandchild(void) {
	own_group();
	child("gc", NULL);
}

static void session_with_grandchild(void) {
	if (setsid() < 0)
		say("setsid failed\n");
	child("sgc", NULL);
}

// echo_loop reads lines from stdin and echoes them, printing a tick every
// 100 ms of silence.
static void echo_loop(void) {
	char line[256];
	size_t have = 0;
	long n = 0, ticks = 0;
	for (;;) {
		struct pollfd p = {.fd = 0, .events = POLLIN};
		int r = poll(&p, 1, 100);
		if (r < 0 && errno != EINTR) {
			say("poll failed\n");
			sleep_ms(100);
			continue;
		}
		if (r <= 0) {
			say("session %d tick %ld ok\n", getpid(), ++ticks);
			continue;
		}
		ssize_t got = read(0, line + have, sizeof line - 1 - have);
		if (got <= 0) {
			sleep_ms(100);
			continue;
		}
		have += got;
		char *nl;
		while ((nl = memchr(line, '\n', have)) != NULL) {
			*nl = 0;
			char *cr = strchr(line, '\r');
			if (cr)
				*cr = 0;
			say("echo %ld %s ok\n", ++n, line);
			size_t used = nl + 1 - line;
			memmove(line, nl + 1, have - used);
			have -= used;
		}
		if (have == sizeof line - 1)
			have = 0;
	}
}

int main(int argc, char **argv) {
	const char *mode = argc > 1 ? argv[1] : "groups";
	if (strcmp(mode, "tty") == 0) {
		child("same", NULL);
		pid_t bg = child("bg", own_group);
		setpgid(bg, bg); // no race with the child's own call
		echo_loop();
	}
	child("same", NULL);
	lead_pid = child("lead", lead_with_grandchild);
	setpgid(lead_pid, lead_pid);
	child("join", join_lead);
	child("sess", session_with_grandchild);
	ticker("root");
}
