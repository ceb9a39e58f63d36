# pool: a multiprocessing.Pool of 2 workers (semaphores: sem_open then
# sem_unlink, so mapped deleted /dev/shm files with no fd; pipes to the
# workers; handler threads) and a POSIX shared memory segment (a linked
# /dev/shm file mapped shared) idle, ticking, until the file argv[1]
# exists, then it maps work over the pool and checks the results and the
# segment's bytes.
import multiprocessing
import multiprocessing.shared_memory
import os
import sys
import time


def square(n):
    return n * n


def main():
    go = sys.argv[1]
    shm = multiprocessing.shared_memory.SharedMemory(create=True, size=3 * 4096)
    pattern = bytes((i * 7 + 3) % 251 for i in range(3 * 4096))
    shm.buf[:] = pattern
    with multiprocessing.Pool(2) as pool:
        print("pool warm", sum(pool.map(square, range(10))), flush=True)
        i = 0
        while not os.path.exists(go):
            i += 1
            print("pool tick %d ok" % i, flush=True)
            time.sleep(0.05)
        got = pool.map(square, range(1000), chunksize=7)
        want = [n * n for n in range(1000)]
        print("pool result %s %d" % ("ok" if got == want else "BAD", sum(got)), flush=True)
    print("pool shm %s %s" % (shm.name, "ok" if bytes(shm.buf) == pattern else "BAD"), flush=True)
    shm.close()
    shm.unlink()
    print("pool done", flush=True)


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    main()
