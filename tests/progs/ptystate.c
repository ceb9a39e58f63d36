/* ptystate: holds three pty pairs and checks their state on SIGUSR1.
 *   A: unlocked, slave open, raw-ish (non-canonical, no echo), window 33x111,
 *      master in packet mode, bytes queued both ways: "to-slave-A" for the
 *      slave to read, "to-master-A\n" (the master sees "\r\n") for the master.
 *   B: a master left locked, slave never opened.
 *   C: slave open in the default (canonical) mode, "out\n" queued for the
 *      master.
 * Prints "ready A B C" (the indexes), then ticks; on SIGUSR1 it checks
 * every pair (indexes, termios, window, packet mode, lock, queued bytes,
 * consuming them) and prints "check ok" or "check FAIL: ...".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t check;
static void on_usr1(int s) { (void)s; check = 1; }

static int ma, sa, mb, mc, sc, ia, ib, ic;
static struct termios ta;

static int master(int unlock, int *idx) {
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || (unlock && unlockpt(m)) || ioctl(m, TIOCGPTN, idx)) { perror("pty"); exit(1); }
	return m;
}

static int slave(int idx) {
	char p[32];
	snprintf(p, sizeof p, "/dev/pts/%d", idx);
	int s = open(p, O_RDWR | O_NOCTTY);
	if (s < 0) { perror(p); exit(1); }
	return s;
}

static const char *readall(int fd, char *buf, size_t n) {
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	size_t got = 0;
	for (;;) {
		ssize_t k = read(fd, buf + got, n - 1 - got);
		if (k <= 0) break;
		got += k;
	}
	fcntl(fd, F_SETFL, fl);
	buf[got] = 0;
	return buf;
}

#define FAIL(...) do { printf("check FAIL: " __VA_ARGS__); printf("\n"); fflush(stdout); return; } while (0)

static void do_check(void) {
	int n, v;
	char buf[256];
	if (ioctl(ma, TIOCGPTN, &n) || n != ia) FAIL("A index %d, want %d", n, ia);
	if (ioctl(mb, TIOCGPTN, &n) || n != ib) FAIL("B index %d, want %d", n, ib);
	if (ioctl(mc, TIOCGPTN, &n) || n != ic) FAIL("C index %d, want %d", n, ic);
	struct termios t;
	if (tcgetattr(sa, &t) || t.c_iflag != ta.c_iflag || t.c_oflag != ta.c_oflag || t.c_lflag != ta.c_lflag ||
	    t.c_cflag != ta.c_cflag || memcmp(t.c_cc, ta.c_cc, NCCS))
		FAIL("A termios iflag %#x oflag %#x lflag %#x, want %#x %#x %#x", t.c_iflag, t.c_oflag, t.c_lflag,
		     ta.c_iflag, ta.c_oflag, ta.c_lflag);
	struct winsize w;
	if (ioctl(ma, TIOCGWINSZ, &w) || w.ws_row != 33 || w.ws_col != 111) FAIL("A window %dx%d", w.ws_row, w.ws_col);
	if (ioctl(ma, TIOCGPKT, &v) || v != 1) FAIL("A packet mode %d", v);
	if (ioctl(mb, TIOCGPTLCK, &v) || v != 1) FAIL("B lock %d", v);
	if (ioctl(ma, TIOCGPTLCK, &v) || v != 0) FAIL("A lock %d", v);
	if (strcmp(readall(sa, buf, sizeof buf), "to-slave-A")) FAIL("A slave read %s", buf);
	readall(ma, buf, sizeof buf); /* packet mode: a status byte first */
	if (buf[0] != 0 || strcmp(buf + 1, "to-master-A\r\n")) FAIL("A master read status %d, %zu bytes: %s", buf[0], strlen(buf + 1), buf + 1);
	if (strcmp(readall(mc, buf, sizeof buf), "out\r\n")) FAIL("C master read %s", buf);
	if (tcgetattr(sc, &t) || !(t.c_lflag & ICANON) || !(t.c_lflag & ECHO)) FAIL("C not canonical");
	/* Both ways still work: a line typed on C reaches its slave. */
	if (write(mc, "typed\n", 6) != 6) FAIL("write C");
	struct timespec ts = {0, 50 * 1000 * 1000};
	nanosleep(&ts, NULL);
	if (strcmp(readall(sc, buf, sizeof buf), "typed\n")) FAIL("C slave read %s", buf);
	printf("check ok\n");
	fflush(stdout);
}

int main(void) {
	signal(SIGUSR1, on_usr1);
	ma = master(1, &ia);
	sa = slave(ia);
	tcgetattr(sa, &ta);
	ta.c_lflag &= ~(ICANON | ECHO);
	ta.c_cc[VMIN] = 1;
	ta.c_cc[VTIME] = 0;
	if (tcsetattr(sa, TCSANOW, &ta)) { perror("tcsetattr"); return 1; }
	tcgetattr(sa, &ta);
	struct winsize w = {.ws_row = 33, .ws_col = 111};
	int one = 1;
	if (ioctl(ma, TIOCSWINSZ, &w) || ioctl(ma, TIOCPKT, &one)) { perror("ioctl"); return 1; }
	if (write(ma, "to-slave-A", 10) != 10 || write(sa, "to-master-A\n", 12) != 12) { perror("write"); return 1; }
	mb = master(0, &ib);
	mc = master(1, &ic);
	sc = slave(ic);
	if (write(sc, "out\n", 4) != 4) { perror("write"); return 1; }
	printf("ready %d %d %d\n", ia, ib, ic);
	fflush(stdout);
	for (long tick = 0;; tick++) {
		if (check) {
			check = 0;
			do_check();
		}
		printf("ptystate tick %ld ok\n", tick);
		fflush(stdout);
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
