/* peerless: holds a pipe read end at fd 9 and a pipe write end at fd 10
 * a connected unix stream socket at fd 11 and the read end of the named
 * FIFO argv[2] (opened non-blocking) at fd 12, whose other ends are outside
 * its tree (the test's), ticks until the file argv[1] exists, then reads
 * fds 9, 11 and 12 to EOF and writes to fds 10 and 11, printing what it got:
 * after a restore with no peer, the bytes queued at dump time then EOF,
 * and EPIPE. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int drain(int fd, char *buf, size_t size) {
	size_t got = 0;
	for (;;) {
		ssize_t n = read(fd, buf + got, size - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			printf("fd%d error %s\n", fd, strerror(errno));
			return -1;
		}
		if (n == 0)
			break;
		got += n;
	}
	buf[got] = 0;
	printf("fd%d read \"%s\" then eof\n", fd, buf);
	return 0;
}

static void poke(int fd) {
	if (write(fd, "x", 1) < 0)
		printf("fd%d write %s\n", fd, errno == EPIPE ? "EPIPE" : strerror(errno));
	else
		printf("fd%d write ok\n", fd);
}

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: peerless GOFILE FIFO\n");
		return 2;
	}
	int fifo = open(argv[2], O_RDONLY | O_NONBLOCK);
	if (fifo < 0 || dup2(fifo, 12) != 12) {
		perror("fifo");
		return 1;
	}
	close(fifo);
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; access(argv[1], F_OK) != 0; i++) {
		printf("peerless tick %d ok\n", i);
		usleep(50 * 1000);
	}
	char buf[4096];
	if (drain(9, buf, sizeof buf) < 0 || drain(11, buf, sizeof buf) < 0 || drain(12, buf, sizeof buf) < 0)
		return 1;
	poke(10);
	poke(11);
	printf("peerless done\n");
	return 0;
}
