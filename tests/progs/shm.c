/* shm: a parent and a forked child sharing memory, for the shared memory
 * identity tests (tests/shm_test.go). Every 100 ms the parent prints
 * "shm tick N ok" or "shm tick N BAD <why>".
 *
 *   memfd:       both hold a memfd fd (offset 1234) and map its first two
 *                pages; its third page is written only through the fd. The
 *                parent writes ping through the mapping, the child reads it
 *                with pread and answers pong with pwrite, the parent reads
 *                pong through the mapping and with pread. Size, seals, the
 *                third page, the second page (written by the child through
 *                its mapping, read by the parent with pread only) and the
 *                fd offset are checked every tick.
 *   memfd-nofd:  the same without fds and sealed F_SEAL_FUTURE_WRITE after
 *                the mapping was made: both map the first two pages, the
 *                child answers through the mapping, the parent checks the
 *                file through /proc/self/map_files.
 *   memfd-private: one process maps a memfd MAP_PRIVATE and writes its first
 *                page (a private copy); every tick it pwrites the tick into
 *                the second page and reads it back through the mapping (the
 *                file's page), and the first page differs in file and copy.
 *   sysv KEY:    both are attached to a SysV segment of key KEY (0: IPC_PRIVATE);
 *   sysv-rm KEY: the same, marked IPC_RMID after the fork. The parent prints
 *                "shmid N ok" first, pings through the segment, the child
 *                answers, and every tick shmctl(IPC_STAT) must still show
 *                the segment's size, 2 attaches and (sysv-rm) SHM_DEST,
 *                and the canary bytes after the first page (0xa5 page,
 *                zero page, 0x3c bytes) must be intact.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE 4096
#define SEG (3 * PAGE + 100) /* ping/pong, 0xa5 page, zero page, 100 bytes of 0x3c */

struct shared {
	volatile long ping, pong;
};

static void bad(long tick, const char *why) {
	printf("shm tick %ld BAD %s\n", tick, why);
	fflush(stdout);
}

/* wait_pong waits (up to 2 s) for the child to answer ping. */
static int wait_pong(struct shared *s, int fd) {
	for (int i = 0; i < 200; i++) {
		long p = -1;
		if (s->pong == s->ping) {
			if (fd >= 0) {
				if (pread(fd, &p, sizeof p, offsetof(struct shared, pong)) != sizeof p || p != s->ping)
					return 0;
			}
			return 1;
		}
		usleep(10000);
	}
	return 0;
}

static void memfd_mode(int nofd) {
	int fd = memfd_create("ckptfs-shm-test", MFD_ALLOW_SEALING);
	if (fd < 0 || ftruncate(fd, 3 * PAGE) < 0) {
		perror("memfd");
		exit(1);
	}
	char third[PAGE];
	memset(third, 0x5a, sizeof third);
	if (pwrite(fd, third, sizeof third, 2 * PAGE) != sizeof third) {
		perror("pwrite");
		exit(1);
	}
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0) {
		perror("seal");
		exit(1);
	}
	/* memfd-nofd closes the fd; it reaches the file (all three pages)
	 * through /proc/self/map_files of the mapping. */
	size_t len = 2 * PAGE;
	struct shared *s = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (s == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	char mapfile[64];
	snprintf(mapfile, sizeof mapfile, "/proc/self/map_files/%lx-%lx", (unsigned long)s, (unsigned long)s + len);
	int seals = F_SEAL_SHRINK | F_SEAL_GROW;
	if (nofd) {
		/* No more write(2) nor new writable mappings; ours stays writable. */
		if (fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) < 0) {
			perror("seal future write");
			exit(1);
		}
		seals |= F_SEAL_FUTURE_WRITE;
		close(fd);
	} else
		lseek(fd, 1234, SEEK_SET);
	pid_t child = fork();
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* A page only the child has in its page tables. */
		memset((char *)s + PAGE, 0x77, PAGE);
		long pong = 0;
		for (;;) {
			long ping;
			if (nofd) {
				if (s->pong != s->ping)
					s->pong = s->ping;
				usleep(2000);
				continue;
			}
			if (pread(fd, &ping, sizeof ping, offsetof(struct shared, ping)) != sizeof ping) {
				printf("child BAD pread\n");
				fflush(stdout);
				exit(1);
			}
			if (ping != pong) {
				pong = ping;
				if (pwrite(fd, &pong, sizeof pong, offsetof(struct shared, pong)) != sizeof pong) {
					printf("child BAD pwrite\n");
					fflush(stdout);
					exit(1);
				}
			}
			usleep(2000);
		}
	}
	for (long tick = 1;; tick++) {
		s->ping = tick;
		char why[128] = "";
		struct stat st;
		char got[PAGE];
		if (nofd && (fd = open(mapfile, O_RDWR)) < 0)
			snprintf(why, sizeof why, "open %s: %m", mapfile);
		else if (!wait_pong(s, fd))
			snprintf(why, sizeof why, "no pong for ping %ld (mapping %ld)", tick, s->pong);
		else if (fstat(fd, &st) < 0 || st.st_size != 3 * PAGE)
			snprintf(why, sizeof why, "size %ld", (long)st.st_size);
		else if (fcntl(fd, F_GET_SEALS) != seals)
			snprintf(why, sizeof why, "seals %#x", fcntl(fd, F_GET_SEALS));
		else if (pread(fd, got, PAGE, 2 * PAGE) != PAGE || memcmp(got, third, PAGE))
			snprintf(why, sizeof why, "third page differs");
		else if (pread(fd, got, PAGE, PAGE) != PAGE || got[0] != 0x77 || got[PAGE - 1] != 0x77)
			snprintf(why, sizeof why, "the child's page differs");
		else if (!nofd && lseek(fd, 0, SEEK_CUR) != 1234)
			snprintf(why, sizeof why, "offset %ld", (long)lseek(fd, 0, SEEK_CUR));
		if (nofd && fd >= 0)
			close(fd);
		if (why[0])
			bad(tick, why);
		else
			printf("shm tick %ld ok\n", tick);
		fflush(stdout);
		usleep(100000);
	}
}

static void private_mode(void) {
	int fd = memfd_create("ckptfs-shm-private", 0);
	if (fd < 0 || ftruncate(fd, 2 * PAGE) < 0 || pwrite(fd, "file0", 6, 0) != 6) {
		perror("memfd");
		exit(1);
	}
	char *m = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	strcpy(m, "cow0"); /* page 0 is a private copy now, page 1 still the file's */
	for (long tick = 1;; tick++) {
		char why[128] = "", got[8] = "";
		if (pwrite(fd, &tick, sizeof tick, PAGE) != sizeof tick)
			snprintf(why, sizeof why, "pwrite: %m");
		else if (*(long *)(m + PAGE) != tick)
			snprintf(why, sizeof why, "mapping shows %ld, not the file's %ld", *(long *)(m + PAGE), tick);
		else if (strcmp(m, "cow0"))
			snprintf(why, sizeof why, "private copy reads %.8s", m);
		else if (pread(fd, got, 6, 0) != 6 || strcmp(got, "file0"))
			snprintf(why, sizeof why, "file reads %.8s", got);
		if (why[0])
			bad(tick, why);
		else
			printf("shm tick %ld ok\n", tick);
		fflush(stdout);
		usleep(100000);
	}
}

static int canary_ok(const char *c) {
	for (int i = 0; i < SEG - PAGE; i++)
		if (c[i] != (i < PAGE ? (char)0xa5 : i < 2 * PAGE ? 0 : (char)0x3c))
			return 0;
	return 1;
}

static void sysv_mode(key_t key, int rm) {
	int id = shmget(key, SEG, IPC_CREAT | 0640);
	if (id < 0) {
		perror("shmget");
		exit(1);
	}
	struct shared *s = shmat(id, NULL, 0);
	if (s == (void *)-1) {
		perror("shmat");
		exit(1);
	}
	char *canary = (char *)s + PAGE;
	memset(canary, 0xa5, PAGE);
	memset(canary + 2 * PAGE, 0x3c, SEG - 3 * PAGE);
	printf("shmid %d ok\n", id);
	fflush(stdout);
	pid_t child = fork();
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;) {
			if (s->pong != s->ping)
				s->pong = s->ping;
			usleep(2000);
		}
	}
	if (rm && shmctl(id, IPC_RMID, NULL) < 0) {
		perror("IPC_RMID");
		exit(1);
	}
	for (long tick = 1;; tick++) {
		s->ping = tick;
		char why[128] = "";
		struct shmid_ds ds;
		if (!wait_pong(s, -1))
			snprintf(why, sizeof why, "no pong for ping %ld (got %ld)", tick, s->pong);
		else if (!canary_ok(canary))
			snprintf(why, sizeof why, "canary pages differ");
		else if (shmctl(id, IPC_STAT, &ds) < 0)
			snprintf(why, sizeof why, "IPC_STAT %d: %m", id);
		else if (ds.shm_segsz != SEG || ds.shm_nattch != 2)
			snprintf(why, sizeof why, "size %zu nattch %lu", ds.shm_segsz, (unsigned long)ds.shm_nattch);
		else if (!!(ds.shm_perm.mode & SHM_DEST) != rm || (ds.shm_perm.mode & 0777) != 0640)
			snprintf(why, sizeof why, "mode %#o", ds.shm_perm.mode);
		else if (!rm && ds.shm_perm.__key != key)
			snprintf(why, sizeof why, "key %#x", ds.shm_perm.__key);
		if (why[0])
			bad(tick, why);
		else
			printf("shm tick %ld ok\n", tick);
		fflush(stdout);
		usleep(100000);
	}
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && !strcmp(argv[1], "memfd"))
		memfd_mode(0);
	if (argc >= 2 && !strcmp(argv[1], "memfd-nofd"))
		memfd_mode(1);
	if (argc >= 2 && !strcmp(argv[1], "memfd-private"))
		private_mode();
	if (argc >= 3 && !strcmp(argv[1], "sysv"))
		sysv_mode((key_t)strtol(argv[2], NULL, 0), 0);
	if (argc >= 3 && !strcmp(argv[1], "sysv-rm"))
		sysv_mode((key_t)strtol(argv[2], NULL, 0), 1);
	fprintf(stderr, "usage: shm memfd | memfd-nofd | memfd-private | sysv KEY | sysv-rm KEY\n");
	return 2;
}
