/* A program that limits its own privileges, then checks each tick that the
 * limits still hold: "tick N ok", or "tick N bad: why".
 *
 *   security caps      root drops every capability (bounding, ambient too)
 *                      and locks securebits
 *   security ambient   becomes uid 65534 keeping CAP_NET_BIND_SERVICE as
 *                      permitted, effective, inheritable, ambient, bounding
 *   security seccomp   no_new_privs and a filter: getppid fails with EPERM
 *   security threads   the filter above in every thread, and one more in each
 *                      of two threads (getpgrp: EACCES in one, ENOTTY in the other)
 *   security misc      personality ADDR_NO_RANDOMIZE, dumpable 0, and a child
 *                      with pdeathsig SIGTERM that checks the same each tick
 *   security sandbox   no_new_privs and a filter that kills on munmap and makes
 *                      prctl fail with EPERM: the dump and the restore inject
 *                      both, the restore's last call is a munmap
 *   security admin     a filter installed with CAP_SYS_ADMIN, no no_new_privs,
 *                      then every capability dropped
 *   security strict    a thread in seccomp strict mode (dump must refuse)
 *   security notify    a user-notification filter whose listener is closed
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SECBIT_NOROOT
#define SECBIT_NOROOT (1 << 0)
#define SECBIT_NOROOT_LOCKED (1 << 1)
#define SECBIT_NO_SETUID_FIXUP (1 << 2)
#define SECBIT_NO_SETUID_FIXUP_LOCKED (1 << 3)
#endif

static const char *mode;
static char bad[200];
static int last_cap;

static void fail(const char *what) {
	perror(what);
	exit(1);
}

static int capset3(unsigned long long prm, unsigned long long eff, unsigned long long inh) {
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2] = {
		{(unsigned)eff, (unsigned)prm, (unsigned)inh},
		{(unsigned)(eff >> 32), (unsigned)(prm >> 32), (unsigned)(inh >> 32)},
	};
	return syscall(SYS_capset, &h, d);
}

/* A filter: syscall nr fails with errno err, all else allowed. */
static void deny(int nr, int err, unsigned flags) {
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog p = {sizeof(f) / sizeof(f[0]), f};
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &p) < 0)
		fail("seccomp");
}

/* munmap kills the process, prctl fails with EPERM, all else allowed. */
static void sandbox(void) {
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_munmap, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_prctl, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog p = {sizeof(f) / sizeof(f[0]), f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fail("no_new_privs");
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &p) < 0)
		fail("seccomp");
}

static void check_fails(const char *name, long r, int err) {
	if (r != -1 || errno != err)
		snprintf(bad, sizeof bad, "%s returned %ld errno %d, want errno %d", name, r, errno, err);
}

static void check_prctls(void) {
	int sig = -1;
	if (prctl(PR_GET_DUMPABLE) != 0)
		snprintf(bad, sizeof bad, "dumpable %d", prctl(PR_GET_DUMPABLE));
	if (!(personality(0xffffffff) & ADDR_NO_RANDOMIZE))
		snprintf(bad, sizeof bad, "personality %#x", personality(0xffffffff));
	if (getpid() != getpgrp()) { /* the child */
		prctl(PR_GET_PDEATHSIG, &sig);
		if (sig != SIGTERM)
			snprintf(bad, sizeof bad, "pdeathsig %d", sig);
	}
}

static void *worker(void *arg) {
	long id = (long)arg;
	deny(SYS_getpgrp, id == 1 ? EACCES : ENOTTY, 0);
	for (;;) {
		check_fails("getppid", syscall(SYS_getppid), EPERM);
		check_fails("getpgrp", syscall(SYS_getpgrp), id == 1 ? EACCES : ENOTTY);
		usleep(20000);
	}
	return NULL;
}

static void *strict(void *arg) {
	int *fds = arg;
	prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT);
	char c;
	read(fds[0], &c, 1);
	syscall(SYS_exit, 0);
	return NULL;
}

static void check(void) {
	if (!strcmp(mode, "caps")) {
		if (prctl(PR_GET_SECUREBITS) != (SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED))
			snprintf(bad, sizeof bad, "securebits %#x", prctl(PR_GET_SECUREBITS));
		if (prctl(PR_CAPBSET_READ, CAP_KILL) != 0)
			snprintf(bad, sizeof bad, "CAP_KILL in the bounding set");
	} else if (!strcmp(mode, "ambient")) {
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_NET_BIND_SERVICE, 0, 0) != 1)
			snprintf(bad, sizeof bad, "CAP_NET_BIND_SERVICE not ambient");
		if (getuid() != 65534)
			snprintf(bad, sizeof bad, "uid %d", getuid());
	} else if (!strcmp(mode, "seccomp") || !strcmp(mode, "threads") || !strcmp(mode, "admin")) {
		check_fails("getppid", syscall(SYS_getppid), EPERM);
		if (!strcmp(mode, "threads") && syscall(SYS_getpgrp) < 0)
			snprintf(bad, sizeof bad, "main thread: getpgrp failed: %d", errno);
	} else if (!strcmp(mode, "misc")) {
		check_prctls();
	} else if (!strcmp(mode, "sandbox")) {
		check_fails("prctl", prctl(PR_GET_DUMPABLE), EPERM);
	}
}

int main(int argc, char **argv) {
	mode = argc > 1 ? argv[1] : "caps";
	FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "r");
	if (!f || fscanf(f, "%d", &last_cap) != 1)
		fail("cap_last_cap");
	fclose(f);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(mode, "caps")) {
		for (int c = 0; c <= last_cap; c++)
			prctl(PR_CAPBSET_DROP, c);
		if (prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED) < 0)
			fail("securebits");
		prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
		if (capset3(0, 0, 0) < 0)
			fail("capset");
	} else if (!strcmp(mode, "ambient")) {
		for (int c = 0; c <= last_cap; c++)
			if (c != CAP_NET_BIND_SERVICE)
				prctl(PR_CAPBSET_DROP, c);
		prctl(PR_SET_KEEPCAPS, 1);
		if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
			fail("setresuid");
		unsigned long long nbs = 1ULL << CAP_NET_BIND_SERVICE;
		if (capset3(nbs, nbs, nbs) < 0)
			fail("capset");
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0) < 0)
			fail("ambient");
	} else if (!strcmp(mode, "seccomp") || !strcmp(mode, "threads")) {
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
			fail("no_new_privs");
		deny(SYS_getppid, EPERM, SECCOMP_FILTER_FLAG_LOG);
		if (!strcmp(mode, "threads")) {
			pthread_t t;
			for (long i = 1; i <= 2; i++)
				if (pthread_create(&t, NULL, worker, (void *)i))
					fail("pthread_create");
		}
	} else if (!strcmp(mode, "misc")) {
		personality(personality(0xffffffff) | ADDR_NO_RANDOMIZE);
		prctl(PR_SET_DUMPABLE, 0);
		pid_t kid = fork();
		if (kid < 0)
			fail("fork");
		if (kid > 0) {
			for (;;)
				pause();
		}
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		prctl(PR_SET_DUMPABLE, 0); /* fork keeps it; to be sure */
	} else if (!strcmp(mode, "sandbox")) {
		sandbox();
	} else if (!strcmp(mode, "admin")) {
		deny(SYS_getppid, EPERM, 0);
		for (int c = 0; c <= last_cap; c++)
			prctl(PR_CAPBSET_DROP, c);
		if (capset3(0, 0, 0) < 0)
			fail("capset");
	} else if (!strcmp(mode, "strict")) {
		static int fds[2];
		pthread_t t;
		if (pipe(fds) < 0 || pthread_create(&t, NULL, strict, fds))
			fail("strict");
	} else if (!strcmp(mode, "notify")) {
		struct sock_filter flt[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog p = {4, flt};
		prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
		int fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &p);
		if (fd < 0)
			fail("seccomp listener");
		close(fd);
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	for (long n = 0;; n++) {
		check();
		printf("%d tick %ld %s%s\n", getpid(), n, bad[0] ? "bad: " : "ok", bad);
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
