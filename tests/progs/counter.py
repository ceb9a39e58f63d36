# counter.py MIB PERIOD_MS: keeps a pattern in memory, re-checks and prints
# "pycounter <pid> tick N ok|BAD" every period.
import hashlib, os, sys, time
mib, period = int(sys.argv[1]), int(sys.argv[2])
block = hashlib.sha256(b"ckptfs").digest() * (1 << 15)  # 1 MiB
data = [bytearray(hashlib.sha256(bytes([i % 256])).digest()) + block for i in range(mib)]
want = [hashlib.sha256(d).digest() for d in data]
tick = 0
while True:
    ok = "ok" if all(hashlib.sha256(d).digest() == w for d, w in zip(data, want)) else "BAD"
    print(f"pycounter {os.getpid()} tick {tick} {ok}", flush=True)
    tick += 1
    time.sleep(period / 1000)
