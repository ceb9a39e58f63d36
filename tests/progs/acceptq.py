# acceptq.py: a TCP server whose connection waits in its accept queue.
#   acceptq.py server PORT TRIGGER N M   listen on 127.0.0.1:PORT, wait for
#       the file TRIGGER, then accept one connection: read N bytes (checked),
#       send M bytes, read N more (checked)
#   acceptq.py client PORT N M           connect, send N bytes, wait until
#       they are acknowledged, then read M bytes (checked), send N more
#   acceptq.py pair PORT TRIGGER N M     both: the client a forked child
# Every line ends in " ok" unless something is wrong ("BAD ...").
import os, socket, sys, termios, fcntl, struct, time

def pattern(n, seed):
    return bytes((seed + i * 7 + i // 251) & 0xff for i in range(n))

def read_exact(s, n):
    b = bytearray()
    while len(b) < n:
        k = s.recv(n - len(b))
        if not k:
            raise SystemExit("BAD eof after %d of %d bytes" % (len(b), n))
        b += k
    return bytes(b)

def say(who, what):
    print("%s %s ok" % (who, what), flush=True)

def server(port, trigger, n, m, l=None):
    if l is None:
        l = socket.socket()
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(("127.0.0.1", port))
        l.listen(8)
        say("server", "listening")
        say("server", "tick")
    while not os.path.exists(trigger):
        say("server", "tick")
        time.sleep(0.1)
    c, _ = l.accept()
    say("server", "accepted")
    if read_exact(c, n) != pattern(n, 1):
        print("BAD server: the queued bytes differ", flush=True); return
    say("server", "read queued bytes")
    c.sendall(pattern(m, 2))
    if read_exact(c, n) != pattern(n, 3):
        print("BAD server: the second request differs", flush=True); return
    say("server", "done")

def client(port, n, m):
    say("client", "tick")
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(pattern(n, 1))
    while struct.unpack("i", fcntl.ioctl(s, termios.TIOCOUTQ, b"\0\0\0\0"))[0] != 0:
        time.sleep(0.01)
    say("client", "sent")
    if read_exact(s, m) != pattern(m, 2):
        print("BAD client: the reply differs", flush=True); return
    say("client", "read reply")
    s.sendall(pattern(n, 3))
    say("client", "done")
    time.sleep(3600)

mode, port = sys.argv[1], int(sys.argv[2])
if mode == "server":
    server(port, sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
elif mode == "client":
    client(port, int(sys.argv[3]), int(sys.argv[4]))
else:
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", port))
    l.listen(8)
    say("server", "listening")
    if os.fork() == 0:
        l.close()
        client(port, int(sys.argv[4]), int(sys.argv[5]))
        os._exit(0)
    server(port, sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), l)
    time.sleep(3600)
