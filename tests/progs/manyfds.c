/* manyfds N FILE: holds about N open fds and checks them every tick. Of
 * every 10 fds, 7 are opens of FILE (one inode for all, the worst case for
 * finding shared open file descriptions) each at its own offset, one is a
 * dup of the one before (a shared description), and two are the ends of a
 * pipe holding one byte per pipe. Every 100 ms it checks each offset, each
 * dup's shared offset and each pipe's byte count and prints
 * "manyfds <pid> tick T ok" (BAD if anything differs). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

enum { OPEN, DUP, PIPE_R, PIPE_W };

int main(int argc, char **argv) {
	int n = argc > 1 ? atoi(argv[1]) : 1000;
	const char *path = argc > 2 ? argv[2] : "/etc/passwd";
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < (rlim_t)n + 64) {
		rl.rlim_cur = (rlim_t)n + 64 < rl.rlim_max ? (rlim_t)n + 64 : rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	int *fd = calloc(n, sizeof *fd), *kind = calloc(n, sizeof *kind);
	if (!fd || !kind) return 1;
	for (int i = 0; i < n; i++) {
		switch (i % 10) {
		case 7:
			fd[i] = dup(fd[i - 1]);
			kind[i] = DUP;
			break;
		case 8: {
			int p[2];
			if (i + 1 >= n || pipe(p)) return 1;
			if (write(p[1], "x", 1) != 1) return 1;
			fd[i] = p[0], kind[i] = PIPE_R;
			fd[i + 1] = p[1], kind[i + 1] = PIPE_W;
			i++;
			break;
		}
		default:
			fd[i] = open(path, O_RDONLY);
			kind[i] = OPEN;
			if (fd[i] >= 0 && lseek(fd[i], i, SEEK_SET) != i) return 1;
		}
		if (fd[i] < 0) {
			perror("manyfds: open");
			return 1;
		}
	}
	for (long tick = 1;; tick++) {
		int ok = 1;
		for (int i = 0; i < n && ok; i++) {
			int avail = 0;
			switch (kind[i]) {
			case OPEN:
				ok = lseek(fd[i], 0, SEEK_CUR) == i;
				break;
			case DUP: /* moving the dup moves the one it shares with */
				ok = lseek(fd[i], 5, SEEK_CUR) == i - 1 + 5 && lseek(fd[i - 1], 0, SEEK_CUR) == i - 1 + 5 &&
				     lseek(fd[i], i - 1, SEEK_SET) == i - 1;
				break;
			case PIPE_R:
				ok = ioctl(fd[i], FIONREAD, &avail) == 0 && avail == 1;
				break;
			case PIPE_W:
				ok = fcntl(fd[i], F_GETFL) >= 0 && (fcntl(fd[i], F_GETFL) & O_ACCMODE) == O_WRONLY;
				break;
			}
		}
		printf("manyfds %d tick %ld %s\n", getpid(), tick, ok ? "ok" : "BAD");
		fflush(stdout);
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
