"""The profiling agent over real gRPC on loopback (port 0, temporary directories).

Covers upload/dedup/resume, profiling in every installed runtime, streaming, queueing of concurrent
clients, deadlines, a crashing / hanging / out-of-memory model, oversized and corrupt artifacts, auth,
the loopback rule, TLS, health and reflection.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from agent import runtimes
from agent._proto.nnfactory.agent.v1 import agent_pb2 as pb
from agent._proto.nnfactory.agent.v1 import agent_pb2_grpc as pb_grpc
from agent.locks import FifoLock
from agent.worker import summarize
from host.client import (
    AgentArtifactError,
    AgentAuthError,
    AgentBusyError,
    AgentClient,
    AgentModelError,
    AgentRequestError,
    AgentTimeoutError,
    AgentUnavailableError,
    ProfileRequest,
    TensorSpec,
)
from tests.support import agent_artifacts as A
from tests.support.agent_servers import agent_server as running_agent

ROOT = Path(__file__).resolve().parents[1]
QUICK = {"warmup_runs": 2, "repeats": 5, "min_time_s": 0.0}
has_torch = importlib.util.find_spec("torch") is not None
has_ort = importlib.util.find_spec("onnxruntime") is not None
has_litert = importlib.util.find_spec("ai_edge_litert") is not None
has_tf = importlib.util.find_spec("tensorflow") is not None
needs_ort = pytest.mark.skipif(not has_ort, reason="onnxruntime not installed")


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("agent")
    with running_agent(d / "cache", device_lock_path=d / "device.lock", allow_pickle_formats=True) as (addr, _):
        yield addr


@pytest.fixture()
def client(agent_server: str):
    with AgentClient(agent_server, timeout_s=20, retries=2, backoff_s=0.05, seed=0) as c:
        yield c


@pytest.fixture(scope="module")
def mm_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return A.onnx_matmul(tmp_path_factory.mktemp("art") / "mm.onnx")


# ------------------------------------------------------------------------------- health / reflection
def test_health_and_reflection(agent_server: str, client: AgentClient) -> None:
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    assert client.health() == "SERVING"
    assert client.health("nnfactory.agent.v1.ProfilingAgent") == "SERVING"
    with grpc.insecure_channel(agent_server) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert {"nnfactory.agent.v1.ProfilingAgent", "grpc.health.v1.Health"} <= services
        pool = DescriptorPool(db)
        svc = pool.FindServiceByName("nnfactory.agent.v1.ProfilingAgent")
        assert {m.name for m in svc.methods} == {"GetDeviceInfo", "HasArtifact", "UploadArtifact", "Profile",
                                                 "ProfileStream", "DeleteArtifacts", "CacheStats"}
        msg = pool.FindMessageTypeByName("nnfactory.agent.v1.ProfileResult")
        assert "median_latency_us" in msg.fields_by_name


def test_device_info(client: AgentClient) -> None:
    info = client.device_info()
    assert info.protocol == "nnfactory.agent.v1"
    assert info.logical_cores >= 1 and info.total_memory_bytes > 0
    names = {r.name for r in info.runtimes}
    assert ("onnxruntime" in names) == has_ort and ("torchscript" in names) == has_torch
    for r in info.runtimes:
        assert r.version and "cpu" in r.devices
        assert r.carries_code == (r.name in ("torchscript", "torch_export"))


# ------------------------------------------------------------------------------- artifacts
def test_upload_dedup_and_delete(client: AgentClient, tmp_path: Path) -> None:
    p = A.onnx_matmul(tmp_path / "dedup.onnx", n=96, seed=1)
    sha = hashlib.sha256(p.read_bytes()).hexdigest()
    first = client.upload(p)
    assert first.sha256 == sha and not first.skipped and first.bytes_sent == p.stat().st_size
    again = client.upload(p.read_bytes())  # bytes work as well as paths
    assert again.skipped and again.bytes_sent == 0 and again.sha256 == sha
    assert client.has_artifact(sha)
    assert client.delete_artifacts([sha]) == [sha]
    assert not client.has_artifact(sha)


def test_upload_resumes_partial(agent_server: str, tmp_path: Path) -> None:
    p = tmp_path / "blob.onnx"
    p.write_bytes(np.random.default_rng(3).bytes(300_000))
    size = p.stat().st_size
    with AgentClient(agent_server, chunk_bytes=64 * 1024) as c:
        part = c.upload(p, stop_after_bytes=100_000)  # the stream ends early: the agent keeps the bytes
        assert part.bytes_sent == 100_000
        st = c.artifact_status(part.sha256)
        assert not st.present and st.partial_bytes == 100_000
        done = c.upload(p)
        assert done.resumed_from == 100_000 and done.bytes_sent == size - 100_000
        assert c.artifact_status(part.sha256).present
        c.delete_artifacts([part.sha256])


def test_gzip_upload(agent_server: str) -> None:
    blob = bytes(3_000_000)  # constant bytes: compress to almost nothing
    with AgentClient(agent_server, compression="gzip") as c:
        up = c.upload(blob)
        assert up.bytes_sent == len(blob) and c.artifact_status(up.sha256).size_bytes == len(blob)
        c.delete_artifacts([up.sha256])


def test_upload_with_wrong_hash_is_rejected(agent_server: str, client: AgentClient) -> None:
    data = b"corrupted in transit" * 100
    wrong = hashlib.sha256(b"something else").hexdigest()
    with grpc.insecure_channel(agent_server) as ch:
        stub = pb_grpc.ProfilingAgentStub(ch)
        with pytest.raises(grpc.RpcError) as ei:
            stub.UploadArtifact(iter([pb.UploadChunk(sha256=wrong, total_size_bytes=len(data), data=data)]), timeout=10)
        assert ei.value.code() == grpc.StatusCode.DATA_LOSS
        with pytest.raises(grpc.RpcError) as ei:
            stub.UploadArtifact(iter([pb.UploadChunk(sha256="../../etc/passwd", total_size_bytes=3, data=b"abc")]),
                                timeout=10)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    st = client.artifact_status(wrong)
    assert not st.present and st.partial_bytes == 0  # the bad bytes were discarded


def test_oversized_artifact(tmp_path: Path) -> None:
    with running_agent(tmp_path / "c", max_artifact_bytes=50_000) as (addr, _):
        port = addr.rsplit(":", 1)[1]
        p = tmp_path / "big.onnx"
        p.write_bytes(b"\0" * 60_000)
        with AgentClient(f"127.0.0.1:{port}") as c, pytest.raises(AgentArtifactError, match="cap of 50000") as ei:
            c.upload(p)
        assert ei.value.kind == "too_large"
        # a single message above the gRPC receive cap is refused by the transport itself
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError) as ei2:
            pb_grpc.ProfilingAgentStub(ch).UploadArtifact(
                iter([pb.UploadChunk(sha256="0" * 64, total_size_bytes=10, data=b"\0" * (5 << 20))]), timeout=10)
        assert ei2.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@needs_ort
def test_corrupt_artifact_and_bad_requests(client: AgentClient, tmp_path: Path, mm_onnx: Path) -> None:
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x08" + np.random.default_rng(1).bytes(2000))
    up = client.upload(bad)
    with pytest.raises(AgentRequestError, match="could not load") as ei:
        client.profile(ProfileRequest(up.sha256, runtime="onnxruntime", **QUICK))
    assert ei.value.code == "INVALID_ARGUMENT"
    with pytest.raises(AgentRequestError, match="upload it first"):
        client.profile(ProfileRequest("ab" * 32, runtime="onnxruntime"))
    sha = client.upload(mm_onnx).sha256
    with pytest.raises(AgentRequestError, match="options: unknown keys"):
        client.profile(ProfileRequest(sha, runtime="onnxruntime", options={"fill_weights": "1"}))
    with pytest.raises(AgentRequestError, match="has 1 input"):
        client.profile(ProfileRequest(sha, inputs=[TensorSpec((1, 64)), TensorSpec((1, 64))], **QUICK))
    t0 = time.monotonic()
    with pytest.raises(AgentRequestError, match="repeats"):
        client.profile(ProfileRequest(sha, repeats=0))
    assert time.monotonic() - t0 < 2.0  # INVALID_ARGUMENT is not retried


# ------------------------------------------------------------------------------- profiling
def _check_result(r, repeats: int) -> None:
    s = sorted(r.samples_ns)
    assert len(s) >= repeats
    assert r.min_latency_us == pytest.approx(s[0] / 1e3)
    assert r.min_latency_us <= r.median_latency_us <= r.p90_latency_us <= r.p99_latency_us <= r.max_latency_us
    assert r.median_latency_us == pytest.approx(np.median(s) / 1e3)
    assert r.std_latency_us == pytest.approx(np.std(s) / 1e3, rel=1e-6, abs=1e-6)
    assert r.peak_bytes > 0 and r.peak_method == "vmhwm_reset"
    assert r.baseline_rss_bytes > 0 and r.process_peak_bytes >= r.baseline_rss_bytes
    assert r.context.threads == 1 and r.context.worker_pid > 0
    assert r.context.runtime_versions
    assert len(r.thread_cpu_samples_ns) == len(r.samples_ns) and r.median_thread_cpu_us > 0
    assert r.context.runqueue_wait_fraction >= 0.0 and r.context.involuntary_context_switches >= 0


@needs_ort
def test_profile_onnx_with_affinity(client: AgentClient, mm_onnx: Path) -> None:
    sha = client.upload(mm_onnx).sha256
    cpu = sorted(client.device_info().allowed_cpus)[-1]
    r = client.profile(ProfileRequest(sha, runtime="onnxruntime", cpu_affinity=[cpu], warmup_runs=3, repeats=20,
                                      min_time_s=0.05, request_id="r1"))
    _check_result(r, 20)
    assert r.runtime == "onnxruntime" and r.request_id == "r1"
    assert r.context.cpu_affinity == (cpu,)
    assert r.measure_time_s >= 0.05
    assert r.inputs[0].shape == (1, 64) and r.inputs[0].dtype == "float32"
    assert "onnxruntime" in r.context.runtime_versions
    # the runtime is sniffed from the bytes when not given; keyword form with bare shapes
    r2 = client.profile(sha, inputs=[(1, 64)], **QUICK)
    assert r2.runtime == "onnxruntime" and r2.inputs[0].shape == (1, 64)


@pytest.mark.slow  # two torch runtimes' first imports (~8 s); test_exports_agent covers the formats
@pytest.mark.skipif(not has_torch, reason="torch not installed")
def test_profile_torchscript_and_export(client: AgentClient, tmp_path: Path) -> None:
    ts = client.upload(A.torchscript(tmp_path / "m.pt")).sha256
    with pytest.raises(AgentRequestError, match="does not record its input shapes"):
        client.profile(ProfileRequest(ts, runtime="torchscript", **QUICK))
    r = client.profile(ProfileRequest(ts, runtime="torchscript", inputs=[TensorSpec((1, 3, 16, 16))], **QUICK))
    _check_result(r, 5)
    assert "torch" in r.context.runtime_versions
    ep = client.upload(A.torch_export(tmp_path / "m.pt2")).sha256
    r2 = client.profile(ProfileRequest(ep, **QUICK))  # runtime sniffed, shapes recorded in the archive
    _check_result(r2, 5)
    assert r2.runtime == "torch_export" and r2.inputs[0].shape == (1, 3, 16, 16)


@pytest.mark.tflite
@pytest.mark.skipif(not (has_litert and has_tf), reason="ai-edge-litert and tensorflow needed")
def test_profile_litert(client: AgentClient, tmp_path: Path) -> None:
    sha = client.upload(A.tflite(tmp_path / "m.tflite")).sha256
    r = client.profile(ProfileRequest(sha, runtime="litert", threads=1, **QUICK))
    _check_result(r, 5)
    assert r.context.extra["xnnpack"] == "true" and r.inputs[0].shape == (1, 16, 16, 3)
    r2 = client.profile(ProfileRequest(sha, options={"xnnpack": "0"}, **QUICK))
    assert r2.runtime == "litert" and r2.context.extra["xnnpack"] == "false"


@needs_ort
def test_profile_stream(client: AgentClient, mm_onnx: Path, tmp_path: Path) -> None:
    a = client.upload(mm_onnx).sha256
    b = client.upload(A.onnx_matmul(tmp_path / "b.onnx", n=32, seed=2)).sha256
    reqs = [ProfileRequest(a, request_id="a", **QUICK), ProfileRequest("cd" * 32, request_id="missing", **QUICK),
            ProfileRequest(b, request_id="b", **QUICK)]
    out = list(client.profile_many(reqs))
    assert [o.index for o in out] == [0, 1, 2] and [o.request_id for o in out] == ["a", "missing", "b"]
    assert out[0].result is not None and out[2].result is not None
    assert out[2].result.inputs[0].shape == (1, 32)
    assert isinstance(out[1].error, AgentRequestError) and out[1].error.code == "NOT_FOUND"
    # streamed results ran one after the other
    assert out[0].result.finished_unix_ns <= out[2].result.started_unix_ns


@needs_ort
def test_concurrent_clients_are_queued(agent_server: str, mm_onnx: Path) -> None:
    with AgentClient(agent_server) as c:
        sha = c.upload(mm_onnx).sha256
    results, errors = [], []

    def work(i: int) -> None:
        try:
            with AgentClient(agent_server) as c:
                results.append(c.profile(ProfileRequest(sha, request_id=str(i), warmup_runs=1, repeats=5,
                                                        min_time_s=0.3)))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 3
    spans = sorted((r.started_unix_ns, r.finished_unix_ns) for r in results)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start, f"measurements overlapped: {spans}"
    assert max(r.queue_wait_us for r in results) >= 0.3e6  # someone waited at least one full measurement


@needs_ort
def test_two_agents_on_one_device_never_overlap(tmp_path: Path, mm_onnx: Path) -> None:
    lock = tmp_path / "device.lock"
    results, errors = [], []

    def work(addr: str) -> None:
        try:
            with AgentClient(addr) as c:
                sha = c.upload(mm_onnx).sha256
                results.append(c.profile(ProfileRequest(sha, warmup_runs=1, repeats=5, min_time_s=0.3)))
        except Exception as exc:
            errors.append(exc)

    with running_agent(tmp_path / "c0", device_lock_path=lock, worker_nice=5) as (a0, _), \
            running_agent(tmp_path / "c1", device_lock_path=lock, worker_nice=5) as (a1, _):
        threads = [threading.Thread(target=work, args=(addr,)) for addr in (a0, a1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors and len(results) == 2
    (s0, e0), (s1, e1) = sorted((r.started_unix_ns, r.finished_unix_ns) for r in results)
    assert e0 <= s1, "two agents timed models at the same time"
    assert all(r.context.extra["nice"].startswith("5") for r in results)  # raising nice needs no privilege


@needs_ort
def test_queue_deadline_and_busy(tmp_path: Path, mm_onnx: Path) -> None:
    """A request whose deadline passes in the queue fails without running; a full queue says busy."""
    with running_agent(tmp_path / "c", max_queue=1) as (addr, _):
        with AgentClient(addr) as c:
            sha = c.upload(mm_onnx).sha256
        long_done = threading.Event()

        def long_profile() -> None:
            with AgentClient(addr) as c:
                # >= 3 s on any machine: a fast one reaches the sample cap long before a min_time_s would
                c.profile(ProfileRequest(sha, warmup_runs=1, repeats=30, min_time_s=0.0, cooldown_ms=100.0))
            long_done.set()

        t = threading.Thread(target=long_profile)
        t.start()
        time.sleep(0.5)  # the long one holds the device now
        with AgentClient(addr, retries=0) as c:
            waiter_err: list[Exception] = []

            def queued() -> None:
                try:
                    c.profile(ProfileRequest(sha, deadline_s=1.0, **QUICK))
                except Exception as exc:
                    waiter_err.append(exc)

            q = threading.Thread(target=queued)
            q.start()
            time.sleep(0.3)  # now one request waits: the queue (max 1) is full
            with pytest.raises(AgentBusyError, match="busy"):
                c.profile(ProfileRequest(sha, **QUICK))
            q.join(10)
        assert len(waiter_err) == 1 and isinstance(waiter_err[0], AgentTimeoutError)
        assert "waiting for the device" in str(waiter_err[0])
        t.join(30)
        assert long_done.is_set()


def test_concurrent_uploads_of_one_artifact(agent_server: str, tmp_path: Path) -> None:
    p = tmp_path / "same.bin"
    p.write_bytes(np.random.default_rng(7).bytes(3_000_000))
    results, errors = [], []

    def up() -> None:
        try:
            with AgentClient(agent_server, chunk_bytes=64 * 1024, backoff_s=0.05) as c:
                results.append(c.upload(p))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=up) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len({r.sha256 for r in results}) == 1
    with AgentClient(agent_server) as c:
        assert c.artifact_status(results[0].sha256).size_bytes == 3_000_000
        c.delete_artifacts([results[0].sha256])


@needs_ort
def test_hang_hits_deadline_and_agent_keeps_serving(client: AgentClient, tmp_path: Path, mm_onnx: Path) -> None:
    sha = client.upload(A.onnx_hang(tmp_path / "hang.onnx")).sha256
    t0 = time.monotonic()
    with pytest.raises(AgentTimeoutError, match="deadline") as ei:
        client.profile(ProfileRequest(sha, deadline_s=1.5, **QUICK))
    assert ei.value.code == "DEADLINE_EXCEEDED" and time.monotonic() - t0 < 10
    ok = client.profile(ProfileRequest(client.upload(mm_onnx).sha256, **QUICK))
    assert ok.median_latency_us > 0


@needs_ort
def test_out_of_memory_model(client: AgentClient, tmp_path: Path, mm_onnx: Path) -> None:
    sha = client.upload(A.onnx_oom(tmp_path / "oom.onnx")).sha256
    with pytest.raises(AgentModelError, match="out of memory") as ei:
        client.profile(ProfileRequest(sha, memory_limit_bytes=2 << 30, **QUICK))
    assert ei.value.kind == "oom" and ei.value.code == "RESOURCE_EXHAUSTED"
    assert client.profile(ProfileRequest(client.upload(mm_onnx).sha256, **QUICK)).peak_bytes > 0


@needs_ort
def test_crashing_worker(tmp_path: Path, mm_onnx: Path) -> None:
    crash = A.onnx_matmul(tmp_path / "crash.onnx", n=16, seed=9)
    sha = hashlib.sha256(crash.read_bytes()).hexdigest()
    with running_agent(tmp_path / "c", worker_env={"NNF_AGENT_TEST_CRASH_SHA256": sha}) as (addr, _), \
            AgentClient(addr) as c:
        c.upload(crash)
        with pytest.raises(AgentModelError, match="SIGSEGV") as ei:
            c.profile(ProfileRequest(sha, **QUICK))
        assert ei.value.kind == "crash" and ei.value.code == "INTERNAL"
        assert c.profile(ProfileRequest(c.upload(mm_onnx).sha256, **QUICK)).median_latency_us > 0


# ------------------------------------------------------------------------------- security
def test_token_checked_on_every_call(tmp_path: Path) -> None:
    with running_agent(tmp_path / "c", token="s3cret") as (addr, _):
        for token in (None, "wrong"):
            with AgentClient(addr, token=token, retries=3) as c:
                t0 = time.monotonic()
                with pytest.raises(AgentAuthError, match="token"):
                    c.has_artifact("0" * 64)
                with pytest.raises(AgentAuthError):
                    c.health()
                with pytest.raises(AgentAuthError):
                    list(c.profile_many([ProfileRequest("0" * 64)]))
                assert time.monotonic() - t0 < 2.0  # not retried
        with AgentClient(addr, token="s3cret") as c:
            assert c.health() == "SERVING" and not c.has_artifact("0" * 64)
            assert c.device_info().auth_required


def test_non_loopback_bind_needs_token(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without a token"), running_agent(tmp_path / "c", address="0.0.0.0:0"):
        pass
    proc = subprocess.run([sys.executable, "-m", "agent", "serve", "--host", "0.0.0.0", "--no-auth", "--cache-dir",
                           str(tmp_path / "c")], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "NNF_AGENT_TOKEN": ""})
    assert proc.returncode == 2 and "without a token" in proc.stderr


def write_self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` and its key, as PEM files in ``tmp_path``."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return tmp_path / "cert.pem", tmp_path / "key.pem"


def test_tls(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    cert, _ = write_self_signed(tmp_path)
    cert_pem = cert.read_bytes()
    with running_agent(tmp_path / "c", address="localhost:0", token="t", tls_cert=tmp_path / "cert.pem",
                       tls_key=tmp_path / "key.pem") as (addr, _):
        port = addr.rsplit(":", 1)[1]
        with AgentClient(f"localhost:{port}", token="t", tls_root_cert=cert_pem) as c:
            assert c.health() == "SERVING" and c.device_info().tls
        with AgentClient(f"localhost:{port}", token="t", retries=0, timeout_s=3) as c, \
                pytest.raises(AgentUnavailableError):
            c.health()  # plaintext client against a TLS agent


def test_unreachable_agent_retries_then_fails() -> None:
    with AgentClient("127.0.0.1:1", retries=2, backoff_s=0.1, timeout_s=2, seed=1, connect_window_s=0.5) as c:
        t0 = time.monotonic()
        with pytest.raises(AgentUnavailableError, match="nnf agent start --local"):
            c.has_artifact("0" * 64)
        assert 0.5 <= time.monotonic() - t0 < 5  # retried for the connect window, then a clear error


# ------------------------------------------------------------------------------- units
def test_summarize_matches_numpy() -> None:
    s = list(np.random.default_rng(0).integers(1000, 100000, 101))
    st = summarize(s)
    assert st["median_latency_us"] == pytest.approx(np.median(s) / 1e3)
    assert st["p90_latency_us"] == pytest.approx(np.percentile(s, 90) / 1e3)
    assert st["p99_latency_us"] == pytest.approx(np.percentile(s, 99) / 1e3)
    assert st["std_latency_us"] == pytest.approx(np.std(s) / 1e3)


def test_fifo_lock_order() -> None:
    lock = FifoLock(max_waiting=8)
    assert lock.acquire(1.0)
    order: list[int] = []

    def waiter(i: int) -> None:
        assert lock.acquire(10.0)
        order.append(i)
        lock.release()

    threads = []
    for i in range(4):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        threads.append(t)
        while lock.queued() < i + 1:
            time.sleep(0.005)
    assert not lock.acquire(0.05)  # times out while held, and leaves the queue
    lock.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3]


def test_sniff_runtime(tmp_path: Path, mm_onnx: Path) -> None:
    assert runtimes.sniff_runtime(mm_onnx) == runtimes.RUNTIME_ONNXRUNTIME
    t = tmp_path / "x.tflite"
    t.write_bytes(b"\x1c\0\0\0TFL3" + b"\0" * 32)
    assert runtimes.sniff_runtime(t) == runtimes.RUNTIME_LITERT
    assert runtimes.runtime_from_suffix("a/b.pt2") == runtimes.RUNTIME_TORCH_EXPORT
    assert runtimes.runtime_from_suffix("model.bin") == runtimes.RUNTIME_UNSPECIFIED


@needs_ort
def test_idle_zygote_exits_and_comes_back(tmp_path: Path, mm_onnx: Path) -> None:
    """A runtime's zygote unused for zygote_idle_s exits (memory back to the device); the next request starts
    a new one."""
    with running_agent(tmp_path / "c", zygote_idle_s=1.0) as (addr, server), AgentClient(addr) as c:
        sha = c.upload(mm_onnx).sha256
        first = c.profile(ProfileRequest(sha, **QUICK))
        pool = server.nnf_servicer.pool
        zygote = pool._zygotes[runtimes.RUNTIME_ONNXRUNTIME]
        assert first.context.extra["isolation"] == "fork"
        end = time.monotonic() + 15
        while time.monotonic() < end and zygote.proc.poll() is None:
            time.sleep(0.1)
        assert zygote.proc.poll() is not None, "the idle zygote did not exit"
        again = c.profile(ProfileRequest(sha, **QUICK))
        assert again.median_latency_us > 0 and pool._zygotes[runtimes.RUNTIME_ONNXRUNTIME].pid != zygote.pid
