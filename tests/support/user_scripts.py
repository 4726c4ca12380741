"""Small programs the shared-server tests run as another Unix user (`python -c`).

Each is self-contained (the standard library, pyzmq and msgpack), takes its arguments
from sys.argv and prints what it saw as JSON or a word, so a test judges it as root.
"""

# argv: endpoint, op, JSON args, timeout: one request; prints the whole reply as
# JSON, or {"timeout": true} when none came.
CALL_SCRIPT = """
import json, sys, uuid
import msgpack, zmq
endpoint, op, args, timeout = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
context = zmq.Context()
sock = context.socket(zmq.REQ)
sock.setsockopt(zmq.LINGER, 0)
sock.connect(endpoint)
sock.send(msgpack.packb({"v": 1, "id": uuid.uuid4().hex, "op": op, "args": args}))
if sock.poll(int(timeout * 1000)):
    print(json.dumps(msgpack.unpackb(sock.recv())))
else:
    print(json.dumps({"timeout": True}))
context.destroy(linger=0)
"""


# The body of a model dir's .py files: proves, by a file, that it was imported.
MARKER_CODE = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


# argv: a dir, then paths: whether the dir may be listed and each path read.
READ_EVERY_PATH = """
import json, os, sys
seen = {}
try:
    os.listdir(sys.argv[1])
    seen["list"] = "allowed"
except PermissionError:
    seen["list"] = "denied"
for path in sys.argv[2:]:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
        seen[path] = "read"
    except PermissionError:
        seen[path] = "denied"
    except OSError as exc:
        seen[path] = f"{type(exc).__name__}"
print(json.dumps(seen))
"""


# argv: a unix socket: "connected", or "denied" by the kernel.
CONNECT = """
import socket, sys
sock = socket.socket(socket.AF_UNIX)
try:
    sock.connect(sys.argv[1])
    print("connected")
except PermissionError:
    print("denied")
"""


# argv: a dir and a target: the dir renamed away and a symlink to target put there.
SWAP = """
import os, sys
out, target = sys.argv[1], sys.argv[2]
os.rename(out, out + ".away")
os.symlink(target, out)
"""


# argv: the events endpoint, then topics: one JSON line per event received (topic,
# job_id, state), after {"ready": true} once connected; exits when stdin closes.
SUBSCRIBER = """
import json, os, sys
import msgpack, zmq
context = zmq.Context()
sub = context.socket(zmq.SUB)
sub.setsockopt(zmq.LINGER, 0)
for topic in sys.argv[2:]:
    sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
sub.connect(sys.argv[1])
if monitor.poll(30000):
    print(json.dumps({"ready": True}), flush=True)
poller = zmq.Poller()
poller.register(sub, zmq.POLLIN)
poller.register(sys.stdin.fileno(), zmq.POLLIN)
while True:
    for item, _ in poller.poll(1000):
        if item is sub:
            topic, body = sub.recv_multipart()
            body = msgpack.unpackb(body)
            seen = {"topic": topic.decode(), "state": body.get("state")}
            print(json.dumps({**seen, "job_id": body.get("job_id")}), flush=True)
        else:  # a line on stdin: one more topic to subscribe to; end of input: exit
            line = sys.stdin.readline()
            if not line:
                sys.exit(0)
            sub.setsockopt(zmq.SUBSCRIBE, line.strip().encode())
"""


# A hand-written ZMTP 3.0 client (NULL mechanism) whose READY command claims a
# User-Id. argv: the control socket, then the claims; prints, per claim, the replies
# to `list` and `shutdown` ({"ok": null, "closed": ...} if the connection closed).
FORGED_ZMTP = """
import json, socket, struct, sys, uuid
import msgpack

def frame(body, more=False, command=False):
    flags = (1 if more else 0) | (4 if command else 0)
    if len(body) > 255:
        return bytes([flags | 2]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body

def exactly(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError("virnucd closed the connection")
        data += chunk
    return data

def read_frame(sock):
    flags = exactly(sock, 1)[0]
    size = struct.unpack(">Q", exactly(sock, 8))[0] if flags & 2 else exactly(sock, 1)[0]
    return flags, exactly(sock, size)

def prop(name, value):
    return bytes([len(name)]) + name + struct.pack(">I", len(value)) + value

def ask(path, user_id, op):
    try:
        return exchange(path, user_id, op)
    except (OSError, EOFError) as exc:  # e.g. a virnucd this client stopped
        return {"ok": None, "closed": repr(exc)}

def exchange(path, user_id, op):
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(path)
    sock.sendall(b"\\xff" + bytes(8) + b"\\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\\0")
                 + bytes(32))
    exactly(sock, 64)
    ready = b"\\x05READY" + prop(b"Socket-Type", b"DEALER") + prop(b"User-Id", user_id)
    sock.sendall(frame(ready, command=True))
    # As libzmq's own clients do: no message before the server's READY (libzmq drops a
    # connection whose data arrives while its ZAP handler is still deciding).
    while not read_frame(sock)[1].startswith(b"\x05READY"):
        pass
    payload = msgpack.packb({"v": 1, "id": uuid.uuid4().hex, "op": op, "args": {}})
    sock.sendall(frame(b"", more=True) + frame(payload))
    while True:
        flags, body = read_frame(sock)
        if not flags & 4 and not flags & 1:
            return msgpack.unpackb(body)

path = sys.argv[1]
answers = {}
for forged in sys.argv[2:]:
    answers[forged] = {op: ask(path, forged.encode(), op) for op in ("list", "shutdown")}
print(json.dumps(answers))
"""
