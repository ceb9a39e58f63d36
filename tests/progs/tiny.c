/* tiny: a libc-free static program (a few KiB) for the committed golden
 * trees of testdata/trees/: it closes every fd above 2, then every 100 ms
 * writes "tick\n" to fd 1. Raw syscalls only, so the binary that the golden
 * tree maps is small enough to commit beside it.
 * build: gcc -O1 -static -nostdlib -fno-stack-protector -o tiny tiny.c */
static long sys3(long n, long a, long b, long c) {
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return r;
}

struct ts { long sec, nsec; };

void _start(void) {
	static const char tick[] = "tick\n";
	struct ts t = {0, 100 * 1000 * 1000};
	sys3(436, 3, ~0L, 0); /* close_range(3, ~0, 0) */
	for (;;) {
		sys3(1, 1, (long)tick, sizeof tick - 1); /* write */
		sys3(35, (long)&t, 0, 0);                 /* nanosleep */
	}
}
