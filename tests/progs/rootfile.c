/* rootfile LOG: started as root, opens LOG (root-owned, mode 0600, created
 * if missing) read-write at fd 3 with O_APPEND, then drops to uid and gid
 * 65534 with no groups, as a daemon does after opening its log. It checks
 * that it could not open LOG itself any more, then every 100 ms appends
 * "line N\n" through fd 3 and reads the whole file back through fd 3:
 * every line 0..N must be there, in order (lines before the first this
 * process wrote are skipped up to the first "line 0"). It prints
 * "rootfile <pid> tick N ok|BAD" on stdout. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char buf[1 << 20];

/* check reads fd 3 whole and says whether it holds lines 0..n. */
static int check(long n) {
	ssize_t got = pread(3, buf, sizeof buf - 1, 0);
	if (got < 0)
		return 0;
	buf[got] = 0;
	char *p = strstr(buf, "line 0\n");
	for (long i = 0; i <= n; i++) {
		char want[32];
		int l = snprintf(want, sizeof want, "line %ld\n", i);
		if (!p || strncmp(p, want, l) != 0)
			return 0;
		p += l;
	}
	return *p == 0;
}

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: rootfile LOG\n");
		return 2;
	}
	int fd = open(argv[1], O_RDWR | O_APPEND | O_CREAT, 0600);
	if (fd != 3) {
		perror("open");
		return 1;
	}
	if (setgroups(0, NULL) || setgid(65534) || setuid(65534)) {
		perror("drop to 65534");
		return 1;
	}
	int again = open(argv[1], O_RDWR);
	if (again >= 0 || errno != EACCES) {
		fprintf(stderr, "rootfile: uid 65534 could open %s itself\n", argv[1]);
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct stat st0;
	fstat(3, &st0);
	for (long n = 0;; n++) {
		char line[32];
		int l = snprintf(line, sizeof line, "line %ld\n", n);
		struct stat st;
		int ok = write(3, line, l) == l && check(n) && fstat(3, &st) == 0 && st.st_ino == st0.st_ino &&
			 st.st_uid == 0 && getuid() == 65534;
		printf("rootfile %d tick %ld %s\n", getpid(), n, ok ? "ok" : "BAD");
		usleep(100000);
	}
}
