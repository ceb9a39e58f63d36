/* newline: opens (creating it and the directories "a\npath: " and "etc" on
 * its way) the file "a\npath: /etc/hostname" below the directory argv[1]
 * read-write and every 100 ms appends "marker N\n" to it,
 * printing "newline <pid> tick N ok" on stdout. A tree writer that does not
 * escape paths turns that name into two path lines (tests/grammar_test.go).
 * usage: newline DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: newline DIR\n");
		return 2;
	}
	close_range(3, ~0U, 0); /* nothing inherited beyond stdio */
	char path[4096];
	snprintf(path, sizeof path, "%s/a\npath: ", argv[1]);
	mkdir(path, 0755);
	snprintf(path, sizeof path, "%s/a\npath: /etc", argv[1]);
	mkdir(path, 0755);
	snprintf(path, sizeof path, "%s/a\npath: /etc/hostname", argv[1]);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd != 3) {
		perror("open");
		return 1;
	}
	for (long n = 1;; n++) {
		char buf[64];
		int len = snprintf(buf, sizeof buf, "marker %ld\n", n);
		if (write(fd, buf, len) != len) {
			printf("newline %d tick %ld BAD write\n", getpid(), n);
		} else {
			printf("newline %d tick %ld ok\n", getpid(), n);
		}
		fflush(stdout);
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
