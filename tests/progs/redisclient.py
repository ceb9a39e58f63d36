# redisclient.py PORT: holds one connection to the redis on 127.0.0.1:PORT
# (retrying until it listens) and sends "INCR c" every 50 ms on it,
# checking each reply is the next number. Prints "client <pid> tick N ok"
# per reply, "client <pid> error ... BAD" on a wrong reply, a reset or an
# EOF (then waits).
import os, socket, sys, time

port = int(sys.argv[1])
while True:
    try:
        s = socket.create_connection(("127.0.0.1", port))
        break
    except ConnectionRefusedError:
        time.sleep(0.02)
f = s.makefile("rb")
n = 0
while True:
    try:
        s.sendall(b"INCR c\r\n")
        line = f.readline()
    except OSError as e:
        print(f"client {os.getpid()} error {e!r} BAD", flush=True)
        while True:
            time.sleep(60)
    n += 1
    ok = line == b":%d\r\n" % n
    print(f"client {os.getpid()} tick {n} {'ok' if ok else 'BAD ' + repr(line)}", flush=True)
    if not ok:
        while True:
            time.sleep(60)
    time.sleep(0.05)
