/* lowlimit: holds /dev/null at fd 200, then lowers its own RLIMIT_NOFILE
 * to 32 (soft and hard, as memcached -c does), so it holds an fd above its
 * own limit; ticks until the file argv[1] exists, then checks that fd 200
 * is still open and the limit still 32. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: lowlimit GOFILE\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	int fd = open("/dev/null", O_RDONLY);
	if (fd < 0 || dup2(fd, 200) != 200) {
		perror("dup2");
		return 1;
	}
	close(fd);
	struct rlimit lim = {32, 32};
	if (setrlimit(RLIMIT_NOFILE, &lim)) {
		perror("setrlimit");
		return 1;
	}
	for (int i = 1; access(argv[1], F_OK) != 0; i++) {
		printf("lowlimit tick %d ok\n", i);
		usleep(50 * 1000);
	}
	getrlimit(RLIMIT_NOFILE, &lim);
	printf("lowlimit fd200 %s limit %llu/%llu\n", fcntl(200, F_GETFD) >= 0 ? "open" : "closed",
	       (unsigned long long)lim.rlim_cur, (unsigned long long)lim.rlim_max);
	printf("lowlimit done\n");
	return 0;
}
