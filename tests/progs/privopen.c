/* privopen FILE SOCK: holds FILE open read-write at fd 3 (it must exist)
 * and a unix stream listener bound to SOCK at fd 4, and prints
 * "privopen <pid> tick N ok|BAD" every 100 ms: each round it writes N at
 * offset 0 of FILE and reads it back through the same fd; BAD if that
 * fails or the fds are not what they were. Run as any uid. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: privopen FILE SOCK\n");
		return 2;
	}
	int fd = open(argv[1], O_RDWR);
	if (fd != 3) {
		perror("open");
		return 1;
	}
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	strncpy(sa.sun_path, argv[2], sizeof sa.sun_path - 1);
	if (s != 4 || bind(s, (struct sockaddr *)&sa, sizeof sa) || listen(s, 4)) {
		perror("bind");
		return 1;
	}
	struct stat st0;
	fstat(fd, &st0);
	for (long n = 0;; n++) {
		long got = -1;
		struct stat st;
		int ok = pwrite(fd, &n, sizeof n, 0) == sizeof n && pread(fd, &got, sizeof got, 0) == sizeof got &&
			 got == n && fstat(fd, &st) == 0 && st.st_ino == st0.st_ino;
		int type = 0;
		socklen_t len = sizeof type;
		ok = ok && getsockopt(4, SOL_SOCKET, SO_ACCEPTCONN, &type, &len) == 0 && type == 1;
		printf("privopen %d tick %ld %s\n", getpid(), n, ok ? "ok" : "BAD");
		fflush(stdout);
		usleep(100000);
	}
}
