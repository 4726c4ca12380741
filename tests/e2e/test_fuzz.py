"""Fuzz the control socket of a real virnucd with over 10,000 malformed or hostile messages.

Random bytes, random msgpack, envelopes of every op with wrongly typed or hostile
arguments, frames over the size limit, multi-frame garbage, DEALER messages without
the empty delimiter, REQ messages with extra frames. Several DEALERs send as fast as
the daemon takes them (replies are drained as they come, so no socket blocks).

Then virnucd must still answer `ping`, run a normal job to the end, not have grown
its memory without bound, and not have flooded its log. Every reply that came back
must be a well-formed error (or result) and none may be `internal`: a hostile
request is the client's fault, never a daemon bug.

The seed is fixed (VIRNUC_TEST_SEED=<seed> tries another) and shown on failure.
"""

from __future__ import annotations

import os
import random
import string
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from tests.support.harness import Daemon, running_daemon
from tests.support.poll import wait_for
from tests.support.seeds import seed

EXAMPLE = Path(__file__).parents[2] / "examples" / "example.fasta"
LIMIT = 4 * 1024 * 1024  # max_message_size: larger payloads get `too_large`
HARD_LIMIT = LIMIT * 5 // 4  # ZeroMQ drops (and disconnects) a peer sending more than this
CODES = {
    "bad_request", "unsupported_version", "unknown_op", "invalid_input", "not_found",
    "conflict", "forbidden", "too_large", "stopping", "internal",
}  # fmt: skip
# Every op and its arguments with their documented types (docs/protocol.md).
OPS: dict[str, dict[str, type]] = {
    "ping": {},
    "submit": {
        "input": str, "output": str, "profile": str, "esm": str, "dnabert": str,
        "classifier": str, "chunk_length": int, "save_embeddings": bool,
        "checkpoint_every": int, "force": bool,
    },
    "status": {"job_id": str},
    "list": {"offset": int, "limit": int},
    "kill": {"job_id": str},
    "workers": {},
    "shutdown": {},
}  # fmt: skip
# Growth of virnucd's resident memory allowed over the whole fuzz. Measured on 2 cores:
# +3 to +18 MiB (allocator high-water marks after 64 frames of 4-5 MiB, which are
# freed again; small messages alone: +5 MiB, flat when repeated). A leak of 10 KiB per
# message would be 100 MB. Before the control server capped what it holds, 60 frames
# just under its old 16 MiB drop limit grew it by 1.2 GiB, and that memory stayed.
MAX_RSS_GROWTH = 100 * 1024 * 1024
BIG_FRAMES = 64  # a little over the limit: each gets `too_large`
HUGE_FRAMES = 32  # far over it: dropped by ZeroMQ
# Log lines virnucd may write during the fuzz: its complaints are rate-limited (one per
# kind per 10 s, with a count of what was suppressed), so a few dozen at most.
MAX_LOG_LINES = 100
FUZZ_SEED = 20261206


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, demo_cache: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("fuzz") / "state", demo_cache) as daemon:
        yield daemon


# --- what to send ----------------------------------------------------------------------


def random_text(rng: random.Random, max_len: int = 40) -> str:
    alphabet = string.printable + "éß漢字\u200b\U0001f9ec"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len)))


KEYS = ["v", "id", "op", "args", "ok", "result", "error", "type", "job_id", "input"]
NAMES = [op for op in OPS if op != "shutdown"]  # never a valid shutdown by chance


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """Any msgpack value, including what the protocol refuses (bin, ext, int keys)."""
    kinds = ["nil", "bool", "int", "float", "str", "name", "bin", "ext"]
    if depth < 4:
        kinds += ["list", "map", "map", "intmap", "deep"]
    kind = rng.choice(kinds)
    if kind == "nil":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, 1, -1, 2, 300, 500, 2**31, -(2**63), 2**64 - 1, rng.randint(-9, 9)])
    if kind == "float":
        return rng.choice([0.0, -0.0, 1.5, float("nan"), float("inf"), 1e308, rng.random()])
    if kind == "str":
        return random_text(rng)
    if kind == "name":
        return rng.choice(KEYS + NAMES)
    if kind == "bin":
        return rng.randbytes(rng.randint(0, 20))
    if kind == "ext":
        return msgpack.ExtType(rng.randint(0, 127), rng.randbytes(rng.randint(0, 9)))
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == "map":
        return {
            rng.choice(KEYS) if rng.random() < 0.7 else random_text(rng, 8): random_value(
                rng, depth + 1
            )
            for _ in range(rng.randint(0, 5))
        }
    if kind == "intmap":
        return {rng.randint(-5, 5): random_value(rng, depth + 1) for _ in range(rng.randint(1, 3))}
    nested: Any = random_value(rng, 4)  # "deep": past the 32-level limit, sometimes
    for _ in range(rng.randint(20, 60)):
        nested = [nested] if rng.random() < 0.5 else {"args": nested}
    return nested


def random_msgpack(rng: random.Random) -> bytes:
    data = msgpack.packb(random_value(rng), use_bin_type=rng.random() < 0.8)
    match rng.randint(0, 9):
        case 0:
            return data[: rng.randint(0, len(data))]  # truncated
        case 1:
            return data + msgpack.packb(random_value(rng))  # trailing data
        case _:
            return data


def wrong_value(rng: random.Random, kind: type) -> Any:
    """A value whose type is not `kind` (bool is not int, int is not bool)."""
    candidates: list[Any] = [7, -1, 2.5, True, "x", "", [], [1, "a"], {}, {"a": 1}, None]
    candidates.append(random_text(rng))
    return rng.choice([v for v in candidates if type(v) is not kind])


HOSTILE_STR = [
    "/" + "a" * 5000,  # ENAMETOOLONG
    "/" + "/".join(["b" * 255] * 20),
    "relative/path.fa",
    "/tmp/with\0nul.fa",
    "/../../../../etc/passwd",
    "/etc/shadow",
    "/dev/zero",
    "/proc/self/status",
    "/",
    "~root/in.fa",
    "x" * 100_000,
    "\U0001f9ec" * 1000,
]
HOSTILE_INT = [0, -1, -(2**63), 2**63 - 1, 2**64 - 1, 400, 299]


def hostile_value(rng: random.Random, kind: type, extra: list[str]) -> Any:
    """A value of the right type that is still wrong, or nasty."""
    if kind is str:
        return rng.choice(HOSTILE_STR + extra)
    if kind is int:
        return rng.choice(HOSTILE_INT)
    return rng.random() < 0.5


def envelope(rng: random.Random, op: str, extra_paths: list[str]) -> dict[str, Any]:
    """A request for `op` that must fail: wrong types, unknown or hostile arguments."""
    fields = OPS[op]
    args: dict[str, Any] = {}
    for name, kind in fields.items():
        if rng.random() < 0.5:
            args[name] = hostile_value(rng, kind, extra_paths)
    if fields and rng.random() < 0.7:
        name = rng.choice(list(fields))
        args[name] = wrong_value(rng, fields[name])
    elif not fields or rng.random() < 0.5:
        args[rng.choice(["gpu", "force ", "", "__class__", random_text(rng, 10)])] = 1
    request: dict[str, Any] = {"v": 1, "id": random_text(rng, 12) or "r", "op": op, "args": args}
    match rng.randint(0, 12):
        case 0:
            request["v"] = rng.choice([2, 0, "1", 1.0, True, None, 2**64 - 1])
        case 1:
            request["id"] = rng.choice([7, "", "i" * 129, None, ["id"]])
        case 2:
            request["op"] = rng.choice([7, "", "PING", "ping ", "frobnicate", None])
        case 3:
            request["args"] = rng.choice([[], "x", 1, None, [args]])
        case 4:
            request[rng.choice(["extra", "ID", "token"])] = 1
        case 5:
            del request[rng.choice(["v", "id", "op", "args"])]
    assert not (request.get("op") == "shutdown" and request.get("args") == {})
    return request


def hostile_submit(rng: random.Random, extra_paths: list[str]) -> dict[str, Any]:
    """A `submit` of the right types whose paths are hostile: it reaches the daemon's
    file checks. No input here is a FASTA file, so no job is ever created."""
    paths = [p for p in HOSTILE_STR + extra_paths if p.startswith("/") and "\0" not in p]
    args: dict[str, Any] = {"input": rng.choice(paths), "output": rng.choice(paths)}
    if rng.random() < 0.5:
        args["profile"] = rng.choice(["demo", "nope", "../../demo"])
    else:
        args["classifier"] = rng.choice(paths)
        args["esm"] = rng.choice([*paths, "esm2_t36_3B_UR50D"])
        args["dnabert"] = rng.choice([*paths, "zhihan1996/DNABERT-S"])
    if rng.random() < 0.5:
        args["chunk_length"] = rng.choice([300, 500])
        args["force"] = rng.random() < 0.5
    return {"v": 1, "id": f"hs{rng.randrange(10**6)}", "op": "submit", "args": args}


def every_op_with_every_wrong_type() -> Iterator[dict[str, Any]]:
    """Systematically: each argument of each op with each wrong type."""
    for op, fields in OPS.items():
        for name, kind in fields.items():
            for value in [7, 2.5, True, "x", [], {}, None, [1], {"k": "v"}]:
                if type(value) is kind or (value is None and name not in ("input", "output")):
                    continue  # `None` is a valid "absent" for optional arguments
                yield {"v": 1, "id": f"{op}.{name}", "op": op, "args": {name: value}}
        yield {"v": 1, "id": f"{op}.unknown", "op": op, "args": {"unknown": 1}}


# --- sending ---------------------------------------------------------------------------


def answerable(frames: list[bytes]) -> bool:
    """Does virnucd answer these frames from a DEALER? (docs/protocol.md, Control frames)

    The ROUTER sees [identity, *frames]; it answers when an empty delimiter is followed
    by exactly one payload frame, and drops everything else.
    """
    if b"" not in frames:
        return False
    return len(frames) - frames.index(b"") - 1 == 1


class Sender:
    """One DEALER that sends without waiting and drains replies as it goes."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str):
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDTIMEO, 10_000)
        self.sock.connect(endpoint)
        self.sent = 0
        self.expected = 0
        self.replies: list[list[bytes]] = []

    def send(self, frames: list[bytes]) -> None:
        while True:
            try:
                self.sock.send_multipart(frames, flags=zmq.NOBLOCK)
                break
            except zmq.Again:  # our queue is full: take replies while the daemon catches up
                self.drain(50)
        self.sent += 1
        self.expected += answerable(frames)
        if self.sent % 64 == 0:
            self.drain()

    def drain(self, timeout_ms: int = 0) -> None:
        while self.sock.poll(timeout_ms, zmq.POLLIN):
            self.replies.append(self.sock.recv_multipart())
            timeout_ms = 0

    def close(self) -> None:
        self.sock.close(linger=0)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def log_lines(daemon: Daemon) -> int:
    return len(daemon.log_path.read_bytes().splitlines())


def check_reply(frames: list[bytes], codes: Counter[str]) -> None:
    reply = msgpack.unpackb(frames[-1])
    assert isinstance(reply, dict), reply
    assert set(reply) == {"v", "id", "ok", "result", "error"}, reply
    assert reply["v"] == 1, reply
    if reply["ok"]:
        assert isinstance(reply["result"], dict), reply
        assert reply["error"] is None, reply
        codes["ok"] += 1
        return
    error = reply["error"]
    assert reply["result"] is None, reply
    assert isinstance(error, dict), reply
    assert error["code"] in CODES, reply
    assert isinstance(error["message"], str), reply
    assert error["code"] != "internal", f"a hostile request hit a daemon bug: {reply}"
    codes[error["code"]] += 1


# --- the test --------------------------------------------------------------------------


def test_hostile_messages_never_stop_or_bloat_virnucd(
    daemon: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(seed(FUZZ_SEED))
    assert daemon.process is not None
    pid = daemon.process.pid
    loop_a, loop_b = tmp_path / "loop_a", tmp_path / "loop_b"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    fifo = tmp_path / "fifo.fa"
    os.mkfifo(fifo)
    extra_paths = [str(loop_a), str(fifo), str(tmp_path), str(tmp_path / "absent.fa")]

    context = daemon.client.context
    endpoint = daemon.client.endpoint
    senders = [Sender(context, endpoint) for _ in range(4)]
    big = Sender(context, endpoint)  # 4-5 MiB: answered with `too_large`
    huge = Sender(context, endpoint)  # > 5 MiB: ZeroMQ drops it and disconnects us
    reqs: list[zmq.Socket[bytes]] = []
    assert daemon.client.call("ping")["ok"]
    rss_before = rss_bytes(pid)
    lines_before = log_lines(daemon)
    started = time.monotonic()
    try:
        messages: list[Callable[[], list[bytes]]] = [
            lambda: [b"", rng.randbytes(rng.randint(0, 600))],  # random bytes
            lambda: [b"", random_msgpack(rng)],  # random msgpack
            lambda: [b"", msgpack.packb(envelope(rng, rng.choice(list(OPS)), extra_paths))],
            lambda: [b"", msgpack.packb(hostile_submit(rng, extra_paths))],
            lambda: [random_msgpack(rng)],  # DEALER without the empty delimiter
            lambda: [b"", random_msgpack(rng), rng.randbytes(rng.randint(0, 50))],  # 2 payloads
            lambda: [rng.randbytes(rng.randint(0, 30)) for _ in range(rng.randint(2, 6))],
            lambda: [rng.randbytes(8), b"", msgpack.packb(envelope(rng, "ping", []))],
        ]
        weights = [24, 24, 24, 3, 8, 7, 5, 5]
        sent = 0
        for request in every_op_with_every_wrong_type():
            senders[sent % 4].send([b"", msgpack.packb(request)])
            sent += 1
        while sent < 10_000:
            make = rng.choices(messages, weights)[0]
            senders[sent % 4].send(make())
            sent += 1
        for _ in range(BIG_FRAMES // 2):
            size = rng.randint(LIMIT + 1, HARD_LIMIT - 64)
            pad = {"v": 1, "id": "big", "op": "ping", "args": {"pad": "x" * size}}
            big.send([b"", msgpack.packb(pad)])
            big.send([b"", rng.randbytes(size)])
            sent += 2
        zeros = bytes(17 << 20)
        for n in range(HUGE_FRAMES):
            huge.send([b"", zeros[: (HARD_LIMIT + 1, 8 << 20, 16 << 20, 17 << 20)[n % 4]]])
            sent += 1
        for n in range(50):  # REQ adds the delimiter itself; the extra frame gets it dropped
            req = context.socket(zmq.REQ)
            req.setsockopt(zmq.LINGER, 0)
            req.connect(endpoint)
            req.send_multipart([msgpack.packb({"v": 1, "id": f"x{n}", "op": "ping", "args": {}}),
                                rng.randbytes(n)])  # fmt: skip
            reqs.append(req)
            sent += 1

        def all_answered() -> bool:
            for sender in (*senders, big):
                sender.drain(10)
            return all(len(s.replies) >= s.expected for s in (*senders, big))

        wait_for(all_answered, 60, "a reply to every answerable message")
        fuzz_s = time.monotonic() - started
        codes: Counter[str] = Counter()
        for sender in (*senders, big):
            assert len(sender.replies) == sender.expected
            for frames in sender.replies:
                check_reply(frames, codes)
        assert codes["too_large"] >= BIG_FRAMES, codes

        # Still alive and well: ping, then a real job to the end.
        assert daemon.client.call("ping")["ok"], daemon.log_tail()
        assert not [r for r in reqs if r.poll(0)], "a REQ message with an extra frame was answered"
        rss_after = rss_bytes(pid)
        lines_during = log_lines(daemon) - lines_before
        out = tmp_path / "out"
        reply = daemon.client.call("submit", input=str(EXAMPLE), output=str(out), profile="demo")
        assert reply["ok"], reply
        status = daemon.client.wait_state(reply["result"]["job_id"], ("done", "failed", "killed"))
        assert status["state"] == "done", status
        assert (out / "prediction_results.txt").exists()
        # A job later, still no reply to what the protocol says must be dropped.
        for sender in (*senders, big):
            sender.drain(10)
        late_replies = sum(len(s.replies) - s.expected for s in (*senders, big))
    finally:
        for sender in (*senders, big, huge):
            sender.close()
        for req in reqs:
            req.close(linger=0)
    growth = rss_after - rss_before
    with capsys.disabled():
        print(
            f"fuzz: {sent} messages in {fuzz_s:.1f} s, replies {dict(codes)}; "
            f"RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB "
            f"({growth / 2**20:+.1f}); {lines_during} log lines"
        )
    assert late_replies == 0, "virnucd answered frames it must drop (no delimiter, 2 payloads)"
    assert growth < MAX_RSS_GROWTH, f"virnucd grew by {growth / 2**20:.1f} MiB"
    assert lines_during < MAX_LOG_LINES, f"{lines_during} log lines for {sent} messages"
    assert daemon.process.poll() is None
