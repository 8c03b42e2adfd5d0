"""Adversarial load on a real agent: malformed, hostile and stalled requests on every RPC, then SIGTERM.

    python benchmarks/agent_fuzz.py [--json] [--requests 12000] [--clients 32] [--seed 0]

Starts an agent on loopback (``agent.launch``; a token, a temporary state/cache directory, a private
device lock) and, from ``--clients`` concurrent threads, sends at least ``--requests`` requests drawn with
a seeded RNG, each with the right token, a wrong one or none:

* undecodable bytes to every method of the agent, the health service and reflection (unary and streams);
* decodable requests with hostile fields: hashes that are not hex, end in a newline, are 1 MiB long or
  traverse paths; NaN/inf/negative times; huge shapes, ranks, thread counts, memory limits, option keys;
  uploads that lie about their size, offset or hash; streams that end early; oversized messages;
* stalled calls: uploads that send a header and stop, unary calls whose message never comes, profile
  streams that send nothing (while checking that a quick call is still answered);
* hostile models: a hang (deadline), an out-of-memory model, a crashing worker, TorchScript that writes a
  file, a torch.export archive whose pickle writes a file, garbage that claims to be ONNX;
* raw TCP: random bytes, HTTP/1.1, a truncated HTTP/2 preface.

Then a valid profile, then SIGTERM. Bounded: everything has a client deadline; the whole run stops by
itself (a few minutes on a 2-core machine). With --json the last line is one JSON object with
``requests``, ``status_histogram``, ``agent_crashes`` (the agent died before SIGTERM), ``hangs`` (a
quick call that hit the *client's* deadline, or a quick call not answered while calls were stalled),
``rss_growth_mb`` (agent RSS after all requests minus after a warm-up round of every kind),
``sigterm_exit_s``, ``orphan_workers`` (measuring processes alive after the agent exited),
``files_left_outside_cache`` (files the hostile models managed to create), ``cache_bytes_after``,
``valid_profile_after_ok``. Targets: 0 crashes, 0 hangs, RSS growth <= 5 MB, SIGTERM exit <= 5 s,
0 orphans, 0 files outside the cache.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _util
import grpc

from agent._proto.nnfactory.agent.v1 import agent_pb2 as pb
from agent.launch import LocalAgent, start_local_agent
from agent.protocol import ERROR_KIND_KEY
from tests.support import agent_artifacts as A
from tests.support.procs import alive, descendants

SERVICE = "/nnfactory.agent.v1.ProfilingAgent/"
UNARY = ["GetDeviceInfo", "HasArtifact", "Profile", "DeleteArtifacts", "CacheStats"]
STREAM_IN = ["UploadArtifact", "ProfileStream"]
OTHER_UNARY = ["/grpc.health.v1.Health/Check"]
OTHER_STREAM = ["/grpc.health.v1.Health/Watch", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"]
QUICK_TIMEOUT_S = 15.0


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hist: collections.Counter[str] = collections.Counter()
        self.requests = 0
        self.hangs: list[str] = []

    def add(self, status: str, n: int = 1) -> None:
        with self.lock:
            self.hist[status] += n
            self.requests += n

    def hang(self, what: str) -> None:
        with self.lock:
            self.hangs.append(what)


def _outcome(tally: Tally, what: str, fn: Callable[[], object], *, may_be_slow: bool = False) -> None:
    try:
        fn()
        tally.add("OK")
    except grpc.RpcError as exc:
        code = exc.code()
        kinds = {k: v for k, v in (exc.trailing_metadata() or ())} if hasattr(exc, "trailing_metadata") else {}
        tally.add(code.name if code else "UNKNOWN")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and ERROR_KIND_KEY not in kinds and not may_be_slow:
            tally.hang(f"{what}: {exc.details()}")


def _garbage(rng: random.Random) -> bytes:
    choice = rng.randrange(5)
    if choice == 0:
        return b"\x0a\xff\xff\xff\xff\x0f"  # a length beyond the message
    if choice == 1:
        return bytes([0xFF]) * rng.randrange(1, 64)  # invalid wire types
    if choice == 2:
        return b"\x08" + b"\xff" * 11  # a varint that never ends
    if choice == 3:
        return rng.randbytes(rng.randrange(1, 2048))
    return b"\x12\x05abc"  # truncated string field


def _bad_sha(rng: random.Random) -> str:
    good = hashlib.sha256(rng.randbytes(8)).hexdigest()
    return rng.choice([good + "\n", good.upper(), good[:63], "../../etc/passwd", "a" * (1 << 20), "",
                       good[:-1] + "g", " " + good, good + "/x", "\x00" * 64, "é" * 64])


def _bad_profile(rng: random.Random, sha: str) -> pb.ProfileRequest:
    req = pb.ProfileRequest(artifact_sha256=sha, warmup_runs=1, repeats=2, min_time_s=0.0)
    pick = rng.randrange(14)
    if pick == 0:
        req.min_time_s = rng.choice([math.nan, math.inf, -1.0, 1e300])
    elif pick == 1:
        req.cooldown_ms = rng.choice([math.nan, -math.inf, 1e12])
    elif pick == 2:
        req.deadline_s = rng.choice([math.nan, math.inf, -5.0])
    elif pick == 3:
        req.threads = rng.choice([1024, -1, 2**31 - 1])
    elif pick == 4:
        req.inputs.add(shape=[2**31, 2**31], dtype="float32")
    elif pick == 5:
        req.inputs.add(shape=[1] * 40, dtype="float32")
    elif pick == 6:
        req.inputs.add(shape=[1, 64], dtype="complex128")
    elif pick == 7:
        req.memory_limit_bytes = rng.choice([1, -1, 2**62])
    elif pick == 8:
        req.options["x" * 100] = "y"
    elif pick == 9:
        req.artifact_sha256 = _bad_sha(rng)
    elif pick == 10:
        req.runtime = rng.choice([99, -3])  # an enum value the agent does not know
    elif pick == 11:
        req.cpu_affinity.extend([4096, -1])
    elif pick == 12:
        req.repeats = 0
    else:
        req.inputs.add(shape=[1, 64], dtype="float32", name="n" * 300)
    return req


def _upload_stream(rng: random.Random, sha: str) -> Iterator[pb.UploadChunk]:
    pick = rng.randrange(6)
    if pick == 0:
        yield pb.UploadChunk(sha256=_bad_sha(rng), total_size_bytes=3, data=b"abc")
    elif pick == 1:
        yield pb.UploadChunk(sha256=sha, total_size_bytes=2**40, data=b"x")  # over every cap
    elif pick == 2:
        yield pb.UploadChunk(sha256=sha, total_size_bytes=10, offset=7, data=b"abc")  # wrong offset
    elif pick == 3:
        yield pb.UploadChunk(sha256=sha, total_size_bytes=4, data=b"abcdefgh")  # more than announced
    elif pick == 4:
        yield pb.UploadChunk(sha256=hashlib.sha256(b"other").hexdigest(), total_size_bytes=5, data=b"wrong")
    else:
        yield pb.UploadChunk(sha256=sha, total_size_bytes=-1)


def fuzz_round(tally: Tally, rng: random.Random, channels: list[grpc.Channel], token: str, sha_ok: str) -> None:
    """One randomly chosen adversarial request."""
    ch = rng.choice(channels)
    md = rng.choice([(("authorization", f"Bearer {token}"),), (("authorization", "Bearer wrong"),), ()])
    kind = 9 if rng.randrange(100) == 0 else rng.randrange(9)  # oversized messages are slow to send: 1 %
    if kind <= 2:  # undecodable bytes to a unary method
        method = rng.choice([SERVICE + m for m in UNARY] + OTHER_UNARY)
        _outcome(tally, method, lambda: ch.unary_unary(method)(_garbage(rng), timeout=QUICK_TIMEOUT_S, metadata=md))
    elif kind == 3:  # undecodable bytes on a stream
        method = rng.choice([SERVICE + m for m in STREAM_IN] + OTHER_STREAM[1:])
        msgs = [_garbage(rng) for _ in range(rng.randrange(1, 4))]
        _outcome(tally, method, lambda: list(ch.stream_stream(method)(iter(msgs), timeout=QUICK_TIMEOUT_S,
                                                                       metadata=md)))
    elif kind in (4, 5):  # decodable, hostile fields
        req = _bad_profile(rng, sha_ok)
        _outcome(tally, "Profile", lambda: ch.unary_unary(
            SERVICE + "Profile", request_serializer=pb.ProfileRequest.SerializeToString,
            response_deserializer=pb.ProfileResult.FromString)(req, timeout=QUICK_TIMEOUT_S, metadata=md))
    elif kind == 6:
        reqs = [_bad_profile(rng, sha_ok) for _ in range(rng.randrange(1, 5))]
        _outcome(tally, "ProfileStream", lambda: list(ch.stream_stream(
            SERVICE + "ProfileStream", request_serializer=pb.ProfileRequest.SerializeToString,
            response_deserializer=pb.ProfileOutcome.FromString)(iter(reqs), timeout=QUICK_TIMEOUT_S, metadata=md)))
    elif kind == 7:
        _outcome(tally, "UploadArtifact", lambda: ch.stream_unary(
            SERVICE + "UploadArtifact", request_serializer=pb.UploadChunk.SerializeToString,
            response_deserializer=pb.UploadArtifactResponse.FromString)(
                _upload_stream(rng, hashlib.sha256(rng.randbytes(8)).hexdigest()), timeout=QUICK_TIMEOUT_S,
                metadata=md))
    elif kind == 8:
        method, msg, cls = rng.choice([
            ("HasArtifact", pb.HasArtifactRequest(sha256=_bad_sha(rng)), pb.HasArtifactResponse),
            ("DeleteArtifacts", pb.DeleteArtifactsRequest(sha256=[_bad_sha(rng)]), pb.DeleteArtifactsResponse),
            ("HasArtifact", pb.HasArtifactRequest(sha256=sha_ok), pb.HasArtifactResponse),
            ("CacheStats", pb.CacheStatsRequest(), pb.CacheStatsResponse)])
        _outcome(tally, method, lambda: ch.unary_unary(SERVICE + method, request_serializer=type(msg).SerializeToString,
                                                       response_deserializer=cls.FromString)(
            msg, timeout=QUICK_TIMEOUT_S, metadata=md))
    else:  # a message over the receive cap
        _outcome(tally, "oversized", lambda: ch.unary_unary(SERVICE + "HasArtifact")(
            b"\x0a" + b"\xff\xff\xff\x07" + b"a" * (5 << 20), timeout=QUICK_TIMEOUT_S, metadata=md))


def _timed_quick(tally: Tally, what: str, quick: Callable[[], object], limit_s: float) -> None:
    t0 = time.monotonic()
    try:
        quick()
        tally.add("OK")
    except grpc.RpcError as exc:
        tally.add(exc.code().name)
        tally.hang(f"{what}: {exc.code().name} {exc.details()}")
    if time.monotonic() - t0 > limit_s:
        tally.hang(f"{what} took > {limit_s} s")


def flood_round(tally: Tally, addr: str, token: str, quick: Callable[[], object]) -> None:
    """More stalled unary calls than the agent has threads: refused or cancelled, and it recovers."""
    stop = threading.Event()
    md = (("authorization", f"Bearer {token}"),)

    def nothing() -> Iterator[bytes]:
        stop.wait(40)
        return
        yield b""

    with grpc.insecure_channel(addr) as ch:
        futs = [ch.stream_unary(SERVICE + "HasArtifact").future(nothing(), timeout=40, metadata=md)
                for _ in range(100)]
        time.sleep(7.0)  # the agent waits at most 5 s for a unary call's message
        _timed_quick(tally, "quick call after a flood of stalled calls", quick, 5.0)
        stop.set()
        for f in futs:
            try:
                f.result()
                tally.add("OK")
            except grpc.RpcError as exc:
                tally.add(exc.code().name)


def stall_round(tally: Tally, addr: str, token: str, quick: Callable[[], object]) -> None:
    """Open long-lived calls that send nothing; a quick call must still be answered meanwhile."""
    stop = threading.Event()
    md = (("authorization", f"Bearer {token}"),)

    def header_then_nothing(i: int) -> Iterator[pb.UploadChunk]:
        yield pb.UploadChunk(sha256=f"{i:064x}", total_size_bytes=100, data=b"12345")
        stop.wait(20)

    def nothing() -> Iterator[bytes]:
        stop.wait(20)
        return
        yield b""

    with grpc.insecure_channel(addr) as ch:
        upload = ch.stream_unary(SERVICE + "UploadArtifact", request_serializer=pb.UploadChunk.SerializeToString)
        futs = [upload.future(header_then_nothing(i), timeout=25, metadata=md) for i in range(40)]
        futs += [ch.stream_unary(SERVICE + m).future(nothing(), timeout=25, metadata=md)
                 for m in ("Profile", "HasArtifact") for _ in range(5)]
        futs += [ch.stream_stream(SERVICE + "ProfileStream")(nothing(), timeout=25, metadata=md) for _ in range(10)]
        watches = [ch.unary_stream("/grpc.health.v1.Health/Watch")(b"", timeout=25, metadata=md) for _ in range(10)]
        time.sleep(1.0)
        _timed_quick(tally, "quick call during stalled streams", quick, 3.0)
        stop.set()
        for w in watches:  # a health watch streams until its client leaves
            w.cancel()
            try:
                list(w)
                tally.add("OK")
            except grpc.RpcError as exc:
                tally.add(exc.code().name)
        for f in futs:
            try:
                f.result() if hasattr(f, "result") else list(f)
                tally.add("OK")
            except grpc.RpcError as exc:
                tally.add(exc.code().name)


def raw_tcp_round(tally: Tally, port: int, rng: random.Random) -> None:
    payloads = [rng.randbytes(rng.randrange(1, 4096)), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04", b"\x16\x03\x01\x00\xa5\x01"]
    for data in payloads:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(data)
                s.settimeout(2)
                with contextlib.suppress(TimeoutError, OSError):
                    s.recv(1024)
            tally.add("raw_tcp_closed")
        except OSError:
            tally.add("raw_tcp_refused")


def hostile_cases(tmp: Path, canary: Path) -> list[tuple[str, Path, dict]]:
    """Hostile models and how to ask for them (built before the agent starts)."""
    from host.client import TensorSpec

    cases: list[tuple[str, Path, dict]] = [
        ("hang", A.onnx_hang(tmp / "hang.onnx"), {"deadline_s": 2.0}),
        ("oom", A.onnx_oom(tmp / "oom.onnx"), {"memory_limit_bytes": 256 << 20}),
        ("crash", A.onnx_matmul(tmp / "crash.onnx", n=16, seed=9), {}),
        ("garbage", _write(tmp / "garbage.onnx", b"\x08" + os.urandom(3000)), {}),
    ]
    if A.has_torch():
        cases += [("writer", A.torchscript_file_writer(tmp / "writer.pt", canary / "by-torchscript"),
                   {"inputs": [TensorSpec((2,))], "runtime": "torchscript"}),
                  ("pickle", A.pt2_pickle_writer(tmp / "evil.pt2", canary / "by-pickle"), {})]
    return cases


def hostile_models(tally: Tally, client: object, cases: list[tuple[str, Path, dict]]) -> None:
    from host.client import AgentError, ProfileRequest

    quick = {"warmup_runs": 1, "repeats": 2, "min_time_s": 0.0}
    for name, path, kw in cases:
        for _ in range(2):
            try:
                sha = client.upload(path).sha256  # type: ignore[attr-defined]
                client.profile(ProfileRequest(sha, **{**quick, **kw}))  # type: ignore[attr-defined]
                tally.add("OK")
            except AgentError as exc:
                tally.add(str(getattr(exc, "code", "UNKNOWN")))
                if name != "hang" and getattr(exc, "code", "") == "DEADLINE_EXCEEDED":
                    tally.hang(f"hostile model {name}: {exc}")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _settled_rss(pid: int) -> int:
    """Median of a few RSS readings after the traffic stopped (in-flight buffers come and go)."""
    time.sleep(1.0)
    readings = []
    for _ in range(5):
        readings.append(_rss(pid))
        time.sleep(0.2)
    return sorted(readings)[2]


class _Oversized(random.Random):
    """Makes fuzz_round send an oversized message (the warm-up sends some of every kind)."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng.random())
        self._first = True

    def randrange(self, *args: int) -> int:  # type: ignore[override]
        if self._first and args == (100,):
            self._first = False
            return 0
        return super().randrange(*args)


def sigterm_phase(agent: LocalAgent, channels: list[grpc.Channel], tally: Tally,
                  seen_workers: set[int]) -> tuple[float, int]:
    """SIGTERM while calls are stalled and undecodable stream messages were just sent: (seconds, exit code)."""
    assert agent.proc is not None
    stop = threading.Event()

    def nothing() -> Iterator[bytes]:
        stop.wait(30)
        return
        yield b""

    md = (("authorization", f"Bearer {agent.token}"),)
    open_calls = [channels[0].stream_stream(SERVICE + "ProfileStream")(nothing(), timeout=30, metadata=md)
                  for _ in range(4)]
    for _ in range(20):
        _outcome(tally, "ProfileStream", lambda: list(channels[1].stream_stream(SERVICE + "ProfileStream")(
            iter([b"\x0a\xff\xff\xff\xff\x0f"]), timeout=5, metadata=md)))
    seen_workers.update(descendants(agent.pid))
    t0 = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    try:
        rc = agent.proc.wait(30)
        took = time.monotonic() - t0
    except subprocess.TimeoutExpired:  # report a wedge as a number, then clean up
        took = float("inf")
        agent.proc.kill()
        rc = agent.proc.wait()
    stop.set()
    for c in open_calls:
        with contextlib.suppress(grpc.RpcError):
            list(c)
    return took, rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=12000, help="adversarial requests of the mass phase")
    ap.add_argument("--clients", type=int, default=32, help="concurrent client threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from host.client import AgentClient, ProfileRequest

    tmp = Path(tempfile.mkdtemp(prefix="nnf-agent-fuzz-"))
    canary = tmp / "canary"  # hostile models try to write here
    canary.mkdir()
    cache, state = tmp / "agent" / "cache", tmp / "agent" / "state"
    models = tmp / "models"
    models.mkdir()
    mm = A.onnx_matmul(models / "mm.onnx")
    cases = hostile_cases(models, canary)
    crash_sha = hashlib.sha256((models / "crash.onnx").read_bytes()).hexdigest()
    before_files = {p for p in tmp.rglob("*")}
    agent = start_local_agent(cache_dir=cache, state_dir=state, log_path=tmp / "agent.log",
                              extra_args=["--device-lock", str(tmp / "device.lock"), "--log-level", "ERROR"],
                              env={"NNF_AGENT_TEST_CRASH_SHA256": crash_sha})
    assert agent.proc is not None and agent.token
    tally = Tally()
    rng = random.Random(args.seed)
    seen_workers: set[int] = set()
    stop_watch = threading.Event()

    def watch_workers() -> None:
        while not stop_watch.wait(0.05):
            seen_workers.update(descendants(agent.pid))

    watcher = threading.Thread(target=watch_workers, daemon=True)
    watcher.start()
    t_start = time.monotonic()
    client = AgentClient(agent.address, token=agent.token, timeout_s=QUICK_TIMEOUT_S)
    sha_ok = client.upload(mm).sha256
    channels = [grpc.insecure_channel(agent.address) for _ in range(8)]

    def quick() -> object:
        return client._stub.HasArtifact(pb.HasArtifactRequest(sha256=sha_ok), timeout=5,
                                        metadata=client._metadata)

    def mass(n: int, seed: int) -> None:
        local = random.Random(seed)
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda i: fuzz_round(tally, random.Random(local.random() + i), channels, agent.token,
                                               sha_ok), range(n)))

    crashed = False
    marks: list[tuple[str, float, int]] = []

    def mark(name: str) -> None:
        marks.append((name, time.monotonic() - t_start, _rss(agent.pid)))
        print(f"[{marks[-1][1]:6.1f} s] {name}: {tally.requests} requests so far, agent RSS {marks[-1][2] / 2**20:.1f} MiB",
              file=sys.stderr, flush=True)

    try:
        # warm-up: every kind of request once or more, so the RSS baseline has the agent's steady state
        client.profile(ProfileRequest(sha_ok, warmup_runs=1, repeats=2, min_time_s=0.0))
        mark('start: warm-up (3000 mixed requests)')
        mass(3000, args.seed + 1)  # the agent's RSS reaches its plateau (thread pools, allocator arenas)
        for _ in range(30):
            fuzz_round(tally, _Oversized(rng), channels, agent.token, sha_ok)
        mark('start: warm-up oversized messages and stalled streams')
        stall_round(tally, agent.address, agent.token, quick)
        rss0 = _settled_rss(agent.pid)
        mark('start: mass (baseline RSS taken)')
        mass(args.requests, args.seed + 2)
        stall_round(tally, agent.address, agent.token, quick)
        mark('start: flood of stalled unary calls')
        flood_round(tally, agent.address, agent.token, quick)
        mark('start: hostile models')
        hostile_models(tally, client, cases)
        mark('start: raw TCP')
        for _ in range(20):
            raw_tcp_round(tally, agent.port, rng)
        mark('start: last mass round')
        mass(500, args.seed + 3)
        rss1 = _settled_rss(agent.pid)
        crashed = agent.proc.poll() is not None
        valid_ok = False
        if not crashed:
            r = client.profile(ProfileRequest(sha_ok, warmup_runs=1, repeats=5, min_time_s=0.0))
            valid_ok = r.median_latency_us > 0 and r.peak_bytes > 0
        sigterm_exit_s, rc = sigterm_phase(agent, channels, tally, seen_workers)
    finally:
        stop_watch.set()
        client.close()
        for ch in channels:
            ch.close()
        if agent.proc.poll() is None:
            agent.proc.kill()
    time.sleep(1.0)
    orphans = sorted(p for p in seen_workers if alive(p))
    for p in orphans:
        os.kill(p, signal.SIGKILL)
    outside = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")
                     if p not in before_files and not p.is_relative_to(tmp / "agent") and p.parent != models
                     and p.name not in ("agent.log", "device.lock"))
    cache_bytes = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    result = {
        "requests": tally.requests,
        "status_histogram": dict(sorted(tally.hist.items())),
        "agent_crashes": int(crashed),
        "hangs": len(tally.hangs),
        "rss_growth_mb": round((rss1 - rss0) / 2**20, 2),
        "sigterm_exit_s": round(sigterm_exit_s, 2),
        "sigterm_exit_code": rc,
        "orphan_workers": len(orphans),
        "workers_seen": len(seen_workers),
        "files_left_outside_cache": len(outside),
        "files_outside_cache": outside[:20],
        "cache_bytes_after": cache_bytes,
        "valid_profile_after_ok": bool(valid_ok),
        "seconds": round(time.monotonic() - t_start, 1),
        "hang_examples": tally.hangs[:5],
        "phases": [{"phase": n, "at_s": round(t, 1), "rss_mb": round(r / 2**20, 1)} for n, t, r in marks],
    }
    print(f"{result['requests']} requests in {result['seconds']} s: {result['status_histogram']}")
    print(f"crashes {result['agent_crashes']}, hangs {result['hangs']}, RSS growth {result['rss_growth_mb']} MB, "
          f"SIGTERM exit {result['sigterm_exit_s']} s (code {rc}), orphans {result['orphan_workers']} of "
          f"{result['workers_seen']} workers seen, files outside the cache {result['files_left_outside_cache']}, "
          f"cache {cache_bytes} bytes, valid profile after: {result['valid_profile_after_ok']}")
    _util.emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
