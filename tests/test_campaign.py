"""Campaigns: deterministic plan, durable resumable store, drift references, devices in parallel, bad input."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from host.errors import CampaignError, ConfigError
from host.profiling.data import load_samples
from host.profiling.plan import CampaignPlan, MeasureSettings, sample_gates, schedule
from host.profiling.predictor import LatencyModel, LatencySchema, MemoryModel, accuracy
from host.profiling.runner import CampaignRunner, DeviceTarget
from host.profiling.store import CampaignStore
from tests.support.campaign_fakes import LAYOUT, TRUE_COEF, FakeBuilder, FakeDevice

ROOT = Path(__file__).resolve().parents[1]


def _plan(**kw) -> CampaignPlan:
    base = dict(backbone="fake_campaign", layout_fingerprint=LAYOUT.fingerprint(), runtime="torchscript",
                input_shape=(1, 8, 8), samples=40, seed=3, reference_every=10, measure=MeasureSettings(repeats=5))
    base.update(kw)
    return CampaignPlan(**base)


def _all_keys(store: CampaignStore) -> list[tuple]:
    return [tuple(r) for r in store.conn.execute("SELECT kind, pass, idx, seq FROM measurements")]


def test_schedule_is_deterministic_shuffled_and_complete() -> None:
    plan = _plan(passes=3)
    a, b = schedule(plan), schedule(plan)
    assert a == b
    keys = [j.key for j in a]
    assert len(keys) == len(set(keys))
    samples = [j for j in a if j.kind == "sample"]
    assert Counter(j.index for j in samples) == {i: 3 for i in range(40)}
    first_pass = [j.index for j in samples if j.pass_no == 0]
    second_pass = [j.index for j in samples if j.pass_no == 1]
    assert first_pass != sorted(first_pass) and first_pass != second_pass  # shuffled, independently per pass
    assert sum(j.kind == "ref" for j in a) == 3 * (12 + 1)  # every 10 samples + a closing round


def test_sample_gates_are_reproducible_and_spread() -> None:
    plan = _plan(samples=200)
    g1 = sample_gates(plan, LAYOUT, 17)
    g2 = sample_gates(plan, LAYOUT, 17)
    assert all(np.array_equal(x, y) for x, y in zip(g1, g2, strict=True))
    counts = np.array([[int(g.sum()) for g in sample_gates(plan, LAYOUT, i)] for i in range(200)])
    ratios = counts.sum(1) / LAYOUT.total_modules
    assert ratios.min() < 0.2 and ratios.max() > 0.85
    # per-layer counts vary independently: not perfectly correlated with the overall ratio
    corr = np.corrcoef(counts[:, 0] / 16, counts[:, 1] / 32)[0, 1]
    assert corr < 0.95


def test_run_fit_and_resume_without_loss_or_duplicates(tmp_path: Path) -> None:
    plan = _plan(samples=60)
    builder = FakeBuilder()
    dev = FakeDevice(noise=0.01, seed=1)
    store = CampaignStore(tmp_path / "c.sqlite")
    runner = CampaignRunner(plan, LAYOUT, builder, progress=False)
    s1 = runner.run([DeviceTarget("fake", dev, store)], stop_after=25)[0]
    assert s1.measured_now == 25 and s1.already_done == 0
    assert len(_all_keys(store)) == 25
    s2 = runner.run([DeviceTarget("fake", dev, store)])[0]
    total = len(schedule(plan))
    assert s2.already_done == 25 and s2.measured_now == total - 25
    keys = _all_keys(store)
    assert len(keys) == len(set(keys)) == total
    assert dev.measured == total  # nothing measured twice
    # reference subnets re-uploaded nothing after their first measurement
    refs = store.rows("ref")
    assert sum(r["bytes_sent"] > 0 for r in refs) == 3
    assert s2.bytes_sent_per_sample < s2.artifact_bytes_mean
    # a third run has nothing left to do
    assert runner.run([DeviceTarget("fake", dev, store)])[0].measured_now == 0
    data = load_samples(store)
    assert len(data.indices) == 60
    model = LatencyModel(LAYOUT, LatencySchema.named("linear")).fit(data.counts, data.latency_us)
    np.testing.assert_allclose(model.coef, TRUE_COEF, rtol=0.1, atol=0.5)
    mem = MemoryModel(active_layers=False).fit(data.param_bytes, data.peak_activation_bytes, data.peak_bytes)
    assert accuracy(mem.predict(data.param_bytes, data.peak_activation_bytes), data.peak_bytes, 0.05)["within"] == 1.0


def test_median_of_passes_and_drift_correction(tmp_path: Path) -> None:
    plan = _plan(samples=50, passes=3, reference_every=5)
    dev = FakeDevice(drift_per_job=0.002)  # +0.2 % per measurement: ~+40 % by the end
    store = CampaignStore(tmp_path / "d.sqlite")
    summary = CampaignRunner(plan, LAYOUT, FakeBuilder(), progress=False).run([DeviceTarget("fake", dev, store)])[0]
    assert summary.drift["range"] > 0.2 and summary.drift["last"] > summary.drift["first"]
    raw = load_samples(store)
    fixed = load_samples(store, correct_drift=True)
    assert raw.latency_by_pass.shape == (50, 3) and not np.isnan(raw.latency_by_pass).any()
    true = np.array([TRUE_COEF @ np.array([1.0, *c]) for c in raw.counts])
    # correction brings every sample to the campaign's median level: the ratio to the truth becomes constant
    spread_raw = np.std(raw.latency_by_pass / true[:, None])
    spread_fixed = np.std(fixed.latency_by_pass / true[:, None])
    assert fixed.drift_corrected and spread_fixed < spread_raw / 10
    one = load_samples(store, passes=1)
    assert one.latency_by_pass.shape == (50, 1)


def test_agent_lost_mid_campaign_then_resume(tmp_path: Path) -> None:
    plan = _plan(samples=30)
    store = CampaignStore(tmp_path / "a.sqlite")
    runner = CampaignRunner(plan, LAYOUT, FakeBuilder(), progress=False)
    dead = FakeDevice(fail_after=12)
    with pytest.raises(CampaignError, match="re-run the same command to resume"):
        runner.run([DeviceTarget("fake", dead, store)])
    assert len(_all_keys(store)) == 12
    alive = FakeDevice()
    runner.run([DeviceTarget("fake", alive, store)])
    keys = _all_keys(store)
    assert len(keys) == len(set(keys)) == len(schedule(plan))
    assert alive.measured == len(schedule(plan)) - 12


def test_several_devices_in_parallel_never_overlap(tmp_path: Path) -> None:
    plan = _plan(samples=12, reference_every=0)
    builder = FakeBuilder(delay_s=0.002)
    devs = [FakeDevice(f"d{i}", delay_s=0.003, builder=builder) for i in range(3)]
    targets = [DeviceTarget(d.name, d, CampaignStore(tmp_path / f"{d.name}.sqlite"), local=True) for d in devs]
    out = CampaignRunner(plan, LAYOUT, builder, progress=False).run(targets)
    assert [s.device for s in out] == ["d0", "d1", "d2"]
    for d, t in zip(devs, targets, strict=True):
        assert d.measured == 12 and d.overlaps == 0 and d.host_overlaps == 0
        assert len(_all_keys(t.store)) == 12


def test_bad_inputs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 200)
    with pytest.raises(CampaignError, match="corrupt or not a campaign store"):
        CampaignStore(bad)
    store = CampaignStore(tmp_path / "s.sqlite")
    runner = CampaignRunner(_plan(), LAYOUT, FakeBuilder(), progress=False)
    runner.run([DeviceTarget("fake", FakeDevice(), store)], stop_after=3)
    with pytest.raises(CampaignError, match="differs in: seed"):
        CampaignRunner(_plan(seed=4), LAYOUT, FakeBuilder(), progress=False).run([DeviceTarget("fake", FakeDevice(), store)])
    with pytest.raises(CampaignError, match="can grow it, not shrink it"):
        CampaignRunner(_plan(samples=39), LAYOUT, FakeBuilder(), progress=False).run([DeviceTarget("fake", FakeDevice(), store)])
    with pytest.raises(CampaignError, match="was measured on"):
        runner.run([DeviceTarget("other", FakeDevice("other"), store)])
    with pytest.raises(CampaignError, match="fingerprint"):
        CampaignRunner(_plan(layout_fingerprint="0" * 64), LAYOUT, FakeBuilder())
    with pytest.raises(ConfigError):
        _plan(samples=0)
    with pytest.raises(CampaignError, match="run `nnf profile` first"):
        load_samples(CampaignStore(tmp_path / "empty.sqlite"))


def test_crashed_subnet_is_recorded_and_skipped(tmp_path: Path) -> None:
    plan = _plan(samples=10, reference_every=0, ratio_min=0.0, ratio_max=0.0, jitter=0.0)  # all-zero gates crash
    store = CampaignStore(tmp_path / "f.sqlite")
    with pytest.raises(CampaignError, match="in a row failed"):
        CampaignRunner(plan, LAYOUT, FakeBuilder(), progress=False).run([DeviceTarget("fake", FakeDevice(), store)])
    assert len(store.failures()) == 5 and "crashed" in store.failures()[0]["message"]
    assert all(f["final"] == 1 for f in store.failures())  # the model's own failure: a result, not retried
    assert len(store.done_keys()) == 5


KILL_SCRIPT = textwrap.dedent(
    """
    from host.profiling.plan import CampaignPlan, MeasureSettings
    from host.profiling.runner import CampaignRunner, DeviceTarget
    from host.profiling.store import CampaignStore
    from tests.support.campaign_fakes import LAYOUT, FakeBuilder, FakeDevice
    log = open({log!r}, "a", buffering=1)
    plan = CampaignPlan(backbone="fake_campaign", layout_fingerprint=LAYOUT.fingerprint(), runtime="torchscript",
                        input_shape=(1, 8, 8), samples=60, seed=5, reference_every=10, measure=MeasureSettings())
    dev = FakeDevice(delay_s={delay}, log=lambda sha: log.write(sha + "\\n"))
    CampaignRunner(plan, LAYOUT, FakeBuilder(), progress=False).run([DeviceTarget("fake", dev, CampaignStore({db!r}))])
    """
)


@pytest.mark.slow  # kill -9 and resume
def test_store_survives_kill_9_and_resumes_exactly(tmp_path: Path) -> None:
    db, log = tmp_path / "k.sqlite", tmp_path / "measured.log"
    script = KILL_SCRIPT.format(log=str(log), db=str(db), delay=0.02)
    # run from the repository root: `python -c` puts the working directory first, so `tests.support` imports
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": "0"}, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 15:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    raw = sqlite3.connect(str(db))
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored_before = raw.execute("SELECT count(*) FROM measurements").fetchone()[0]
    raw.close()
    measured_before = len(log.read_text().splitlines())
    assert measured_before >= 15 and measured_before - 1 <= stored_before <= measured_before  # ≤ 1 in flight lost
    rc = subprocess.run([sys.executable, "-c", script.replace("delay_s=0.02", "delay_s=0.0")], check=False).returncode
    assert rc == 0
    store = CampaignStore(db)
    keys = _all_keys(store)
    plan = store.plan()
    assert len(keys) == len(set(keys)) == len(schedule(plan))
    total_measured = len(log.read_text().splitlines())
    assert total_measured - len(keys) <= 1  # at most the one measurement in flight at the kill was repeated


# ---- against a real agent over gRPC ----------------------------------------------------------------


def _start_agent(cache: Path) -> tuple[subprocess.Popen, str]:
    from agent.launch import start_local_agent

    agent = start_local_agent(cache_dir=cache, no_auth=True, extra_args=["--device-lock", "none"])
    return agent.proc, agent.address


def _stop(proc: subprocess.Popen, *, kill: bool = False) -> None:
    if proc.poll() is None:
        proc.kill() if kill else proc.terminate()
        proc.wait(timeout=30)
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()


def _profile_cmd(agent: str, root: Path) -> list[str]:
    return [sys.executable, "-m", "host", "profile", "--device", "cpu-test", "--agent", agent, "--backbone", "resnet_tiny",
            "--samples", "5", "--reference-every", "0", "--warmup", "1", "--repeats", "3", "--min-time-s", "0",
            "--weights", "constant", "--compression", "gzip", "--clock", "thread_cpu", "--campaigns-dir", str(root), "--json"]


@pytest.mark.slow
def test_real_agent_killed_mid_campaign_then_resume_and_fit(tmp_path: Path) -> None:
    """Kill -9 the agent while a campaign runs; re-running the same command completes it, no loss, no duplicates."""
    import json as _json

    root = tmp_path / "camp"
    agent, addr = _start_agent(tmp_path / "cache")
    store_path = root / "cpu-test" / "resnet_tiny-torchscript.sqlite"
    prof = subprocess.Popen(_profile_cmd(addr, root), cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        stored = 0
        while time.monotonic() < deadline and prof.poll() is None:
            if store_path.exists():
                with sqlite3.connect(str(store_path)) as c:
                    try:
                        stored = c.execute("SELECT count(*) FROM measurements").fetchone()[0]
                    except sqlite3.OperationalError:
                        stored = 0
                if stored >= 2:
                    break
            time.sleep(0.1)
        assert stored >= 2, "campaign made no progress"
        _stop(agent, kill=True)
        _, err = prof.communicate(timeout=120)
        assert prof.returncode == 2 and "re-run the same command to resume" in err, err
    finally:
        _stop(agent, kill=True)
        _stop(prof, kill=True)
    with CampaignStore(store_path) as store:
        before = len(_all_keys(store))
    assert 2 <= before < 5
    agent2, addr2 = _start_agent(tmp_path / "cache")
    try:
        done = subprocess.run(_profile_cmd(addr2, root), cwd=str(ROOT), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        summary = _json.loads(done.stdout.strip().splitlines()[-1])["devices"][0]
        assert summary["already_done"] == before and summary["measured_now"] == 5 - before
        assert summary["host_seconds_per_subnet"] > 0 and summary["bytes_sent_per_sample"] > 0
        # constant weights + gzip: the wire carries a small fraction of the artifact
        assert 0 < summary["wire_bytes_per_sample"] < summary["bytes_sent_per_sample"] / 3
    finally:
        _stop(agent2)
    with CampaignStore(store_path) as store:
        keys = _all_keys(store)
        assert len(keys) == len(set(keys)) == 5
        rows = store.rows("sample")
        assert all(r["latency_median_us"] > 0 and r["peak_bytes"] > 0 for r in rows)
        assert all(_json.loads(r["context"]).get("clock") == "thread_cpu" for r in rows)  # --clock thread_cpu
        assert store.get_meta("device_info")["runtimes"]
    fit = subprocess.run([sys.executable, "-m", "host", "fit", "--device", "cpu-test", "--campaigns-dir", str(root),
                          "--profiles-dir", str(tmp_path / "profiles"), "--test", "2", "--json"],
                         cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert fit.returncode == 0, fit.stderr
    out = _json.loads(fit.stdout.strip().splitlines()[-1])
    assert out["samples"] == {"train": 3, "test": 2}
    profile = _json.loads((tmp_path / "profiles" / "cpu-test.json").read_text())
    assert profile["device"]["cpu_model"] and "resnet_tiny/torchscript" in profile["profiles"]


def test_unreachable_agent_is_a_clear_error(tmp_path: Path, monkeypatch, capsys) -> None:
    import socket

    from host.cli import main
    from host.client import AgentClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    # the error, not the client's retry schedule (tests/test_agent.py times that): no back-off here
    monkeypatch.setattr(AgentClient.__init__, "__kwdefaults__",
                        {**AgentClient.__init__.__kwdefaults__, "retries": 0, "connect_window_s": 0.0})
    rc = main(_profile_cmd(f"127.0.0.1:{port}", tmp_path)[3:])
    err = capsys.readouterr().err
    assert rc == 2 and "127.0.0.1" in err and "Traceback" not in err, err


def test_latency_statistics_of_raw_runs() -> None:
    from host.profiling.data import row_latency
    from host.profiling.measurers import Measurement, measurement_latency

    runs = [10.0, 11.0, 12.0, 13.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
    row = {"latency_median_us": 55.0, "latency_min_us": 10.0, "latency_mean_us": 49.6, "samples_us": str(runs)}
    assert row_latency(row, "median") == 55.0 and row_latency(row, "min") == 10.0
    assert row_latency(row, "p10") == pytest.approx(np.percentile(runs, 10))
    assert row_latency(row, "p25") == pytest.approx(np.percentile(runs, 25))
    assert row_latency({**row, "samples_us": "[]"}, "p10") == 55.0  # no raw runs: fall back to the median
    assert row_latency(row, "p90") == pytest.approx(np.percentile(runs, 90))  # budgets are held to high percentiles
    assert row_latency(row, "p99") == pytest.approx(np.percentile(runs, 99))
    for bad in ("p100", "p0", "q90", "max"):
        with pytest.raises(ConfigError, match="unknown latency statistic"):
            row_latency(row, bad)
    m = Measurement(55.0, 10.0, 49.6, 90.0, 1.0, 10, 1, "x", {}, runs)
    assert measurement_latency(m, "p10") == pytest.approx(np.percentile(runs, 10))
    assert m.latency("p90") == pytest.approx(np.percentile(runs, 90)) and m.latency("median") == 55.0
    with pytest.raises(ConfigError, match="clock"):
        MeasureSettings(clock="tsc")


@pytest.mark.parametrize("runtime", ["torchscript", pytest.param("onnxruntime", marks=pytest.mark.slow)])
def test_extracting_builder_exports_for_the_runtime(runtime: str) -> None:
    import hashlib

    import torch

    from host.gates import random_gates
    from host.profiling.build import ExtractingBuilder
    from host.supernets import build_supernet

    net = build_supernet("resnet_tiny")
    layout = net.gate_layout()
    b = ExtractingBuilder(net, runtime)
    gates = random_gates(layout, 0.5, generator=torch.Generator().manual_seed(0), per_layer_jitter=0.4)
    built = b(gates)
    assert built.artifact_sha256 == hashlib.sha256(built.data).hexdigest() and len(built.data) > 1000
    exact = ExtractingBuilder(net, "torchscript", exact_costs=True)(gates)  # costs read from the compact spec
    assert b.structure is not None and exact.macs > 0
    assert (built.param_bytes, built.peak_activation_bytes) == (exact.param_bytes, exact.peak_activation_bytes)
    if runtime == "onnxruntime":
        import onnx

        model = onnx.load_from_string(built.data)
        assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, *net.input_shape]
    else:
        assert built.data[:2] == b"PK"  # TorchScript archives are zip files
    with pytest.raises(ConfigError, match="unknown runtime"):
        ExtractingBuilder(net, "tensorrt")


def test_constant_weights_artifacts_compress_and_keep_the_architecture() -> None:
    import io
    import warnings
    import zlib

    import torch

    from host.gates import random_gates
    from host.profiling.build import ExtractingBuilder
    from host.supernets import build_supernet

    net = build_supernet("resnet_tiny")
    gates = random_gates(net.gate_layout(), 0.6, generator=torch.Generator().manual_seed(2))
    real = ExtractingBuilder(net)(gates)
    const = ExtractingBuilder(net, constant_weights=True)(gates)
    assert (real.param_bytes, real.peak_activation_bytes) == (const.param_bytes, const.peak_activation_bytes)
    # resnet_tiny has only 195 KB of weights next to ~50 KB of compressed TorchScript code and debug info
    assert len(zlib.compress(const.data)) < len(zlib.compress(real.data)) / 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        a = torch.jit.load(io.BytesIO(real.data))
        b = torch.jit.load(io.BytesIO(const.data))
    shapes = lambda m: [tuple(p.shape) for p in m.parameters()]  # noqa: E731
    assert shapes(a) == shapes(b) and all(float(p.detach().abs().sum()) == 0 for n, p in b.named_parameters() if "weight" in n and p.dim() > 1)
    with pytest.raises(ConfigError, match="weights"):
        _plan(weights="random")


def test_separate_heldout_campaign_with_three_passes(tmp_path: Path) -> None:
    from host.profiling.device_profile import heldout_arrays

    main_store = CampaignStore(tmp_path / "main.sqlite")
    CampaignRunner(_plan(samples=30, reference_every=0), LAYOUT, FakeBuilder(), progress=False).run(
        [DeviceTarget("fake", FakeDevice(noise=0.05, seed=3), main_store)])
    test_store = CampaignStore(tmp_path / "test.sqlite")
    CampaignRunner(_plan(samples=8, passes=3, reference_every=0), LAYOUT, FakeBuilder(), progress=False).run(
        [DeviceTarget("fake", FakeDevice(noise=0.05, seed=4), test_store)])
    main, test = load_samples(main_store), load_samples(test_store)
    assert test.latency_by_pass.shape == (8, 3)
    fs = heldout_arrays(main, test)
    assert len(fs.train) == 22 and len(fs.test) == 8  # indices 0..7 are held out, never trained on
    np.testing.assert_array_equal(fs.counts[fs.test], test.counts)
    np.testing.assert_allclose(fs.latency_us[fs.test], np.median(test.latency_by_pass, axis=1))  # truth = median of 3
    assert heldout_arrays(main, test, train_limit=15).train.size == 15
    big = heldout_arrays(main, test, train_limit=500)
    assert big.train.size == 22 and "only 22 training subnets" in big.warnings[0]
    shrunk = heldout_arrays(main, None, n_test=100)
    assert shrunk.test.size == 15 and "held out 15 subnets instead of the 100 asked" in shrunk.warnings[0]
    other = load_samples(CampaignStore(tmp_path / "main.sqlite"))
    other.counts = other.counts + 1  # a "test campaign" with other gates for the same indices is refused
    with pytest.raises(Exception, match="same --seed"):
        heldout_arrays(main, other)


# ---- transient failures, schema migration, growth, sample mix --------------------------------------


def test_transient_failures_are_retried_not_recorded_as_done(tmp_path: Path) -> None:
    plan = _plan(samples=20, reference_every=0)
    store = CampaignStore(tmp_path / "t.sqlite")
    flaky = FakeDevice(transient=lambda call, counts: call % 4 == 0)  # every 4th request: deadline while queued
    s = CampaignRunner(plan, LAYOUT, FakeBuilder(), progress=False).run([DeviceTarget("fake", flaky, store)])[0]
    assert s.transient_now >= 5 and s.failed_now == 0
    assert s.measured_now == 20 and s.left_to_retry == 0  # retried after the others, within the same run
    assert len(store.rows("sample")) == 20 and store.failures() == []

    # a request that always fails transiently stays to retry: never "done", measured on the next run
    store2 = CampaignStore(tmp_path / "t2.sqlite")
    stuck = FakeDevice(transient=lambda call, counts: counts[0] == _first_counts(plan))
    s1 = CampaignRunner(plan, LAYOUT, FakeBuilder(), progress=False, retry_rounds=2).run(
        [DeviceTarget("fake", stuck, store2)])[0]
    assert s1.measured_now == 19 and s1.left_to_retry == 1
    left = store2.failures(final=False)
    assert len(left) == 1 and left[0]["attempts"] == 3 and "DEADLINE_EXCEEDED" in left[0]["message"]
    assert len(store2.done_keys()) == 19
    s2 = CampaignRunner(plan, LAYOUT, FakeBuilder(), progress=False).run([DeviceTarget("fake", FakeDevice(), store2)])[0]
    assert (s2.already_done, s2.measured_now, s2.left_to_retry) == (19, 1, 0)
    assert len(store2.rows("sample")) == 20 and store2.failures() == []


def _first_counts(plan: CampaignPlan) -> int:
    return int(sample_gates(plan, LAYOUT, 0)[0].sum())


def test_too_many_transient_failures_in_a_row_stop_the_campaign(tmp_path: Path) -> None:
    store = CampaignStore(tmp_path / "s.sqlite")
    busy = FakeDevice(transient=lambda call, counts: True)
    with pytest.raises(CampaignError, match="in a row failed.*re-run the same command"):
        CampaignRunner(_plan(samples=10, reference_every=0), LAYOUT, FakeBuilder(), progress=False).run(
            [DeviceTarget("fake", busy, store)])
    assert store.done_keys() == set() and len(store.failures(final=False)) == 5


V1_PLAN = {"backbone": "fake_campaign", "input_shape": [1, 8, 8], "jitter": 0.3, "passes": 1, "ratio_max": 1.0,
           "ratio_min": 0.05, "reference_every": 0, "runtime": "torchscript", "samples": 6, "seed": 3,
           "weights": "real", "measure": {"clock": "wall", "deadline_s": 120.0, "min_time_s": 0.5, "repeats": 5,
                                          "threads": 1, "warmup_runs": 5}}


def test_version_1_store_migrates_and_resumes(tmp_path: Path) -> None:
    """A store written by the previous NN-Factory (schema 1): columns added in a versioned migration, its
    rows kept (as uniform samples), its failures split into final and transient, and resuming measures
    exactly what is missing, including the transient failures the old version had recorded as done."""
    import json

    from host.profiling.store import _V1_SCHEMA, STORE_SCHEMA_VERSION, _statements

    db = tmp_path / "v1.sqlite"
    plan = CampaignPlan.from_json({**V1_PLAN, "layout_fingerprint": LAYOUT.fingerprint()})
    c = sqlite3.connect(str(db))
    for stmt in _statements(_V1_SCHEMA):
        c.execute(stmt)
    c.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    c.execute("INSERT INTO meta VALUES ('plan', ?)", (json.dumps({**V1_PLAN, "layout_fingerprint": LAYOUT.fingerprint()}),))
    c.execute("INSERT INTO meta VALUES ('layout', ?)", (json.dumps(LAYOUT.to_json()),))
    c.execute("INSERT INTO meta VALUES ('device_ident', ?)",
              (json.dumps({"hostname": "host-fake", "cpu_model": "FakeCPU", "machine": "x86_64"}),))
    jobs = schedule(plan)
    assert [j.index for j in jobs] == [j.index for j in schedule(plan)]
    j0, j1, j2 = jobs[:3]
    counts = json.dumps([int(g.sum()) for g in sample_gates(plan, LAYOUT, j0.index)])
    c.execute("INSERT INTO measurements (kind, pass, idx, seq, counts, gates_sha256, latency_median_us, measured_unix, "
              "peak_bytes, param_bytes, peak_activation_bytes) VALUES (?, ?, ?, ?, ?, 'x', 500.0, 1.0, 1000000, 10, 10)",
              (j0.kind, j0.pass_no, j0.index, j0.seq, counts))
    c.execute("INSERT INTO failures VALUES (?, ?, ?, ?, ?, 1.0)", (j1.kind, j1.pass_no, j1.index, j1.seq,
              "Profile on agent 127.0.0.1:1: DEADLINE_EXCEEDED: deadline of 120 s passed while waiting for the device"))
    c.execute("INSERT INTO failures VALUES (?, ?, ?, ?, ?, 1.0)", (j2.kind, j2.pass_no, j2.index, j2.seq,
              "Profile on agent 127.0.0.1:1: RESOURCE_EXHAUSTED: model ran out of memory"))
    c.commit()
    c.close()

    store = CampaignStore(db)
    assert int(store.get_meta("schema_version")) == STORE_SCHEMA_VERSION == 2
    assert {"source", "samples_us", "wire_bytes"} <= {r[1] for r in store.conn.execute("PRAGMA table_info(measurements)")}
    assert store.rows("sample")[0]["source"] == "uniform"
    assert [(f["idx"], f["final"]) for f in store.failures()] == [(j1.index, 0), (j2.index, 1)]
    assert store.plan() == plan and store.plan().mix.fractions()["uniform"] == 1.0
    assert len(store.done_keys()) == 2  # the measurement and the out-of-memory failure
    dev = FakeDevice()
    s = CampaignRunner(plan, LAYOUT, FakeBuilder(), progress=False).run([DeviceTarget("fake", dev, store)])[0]
    assert (s.plan, s.already_done, s.measured_now) == ("resumed", 2, 4)  # the timed-out job is measured now
    assert dev.measured == 4 and len(store.rows("sample")) == 5 and len(store.failures()) == 1
    store.close()
    reopened = CampaignStore(db)  # opening a current store changes nothing
    assert len(reopened.rows("sample")) == 5 and int(reopened.get_meta("schema_version")) == 2
    old = tmp_path / "newer.sqlite"
    CampaignStore(old).set_meta("schema_version", 3)
    with pytest.raises(CampaignError, match="schema version 3"):
        CampaignStore(old)


def test_pre_version_store_without_meta_is_brought_up_to_date(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    c = sqlite3.connect(str(db))
    c.execute("CREATE TABLE measurements (kind TEXT NOT NULL, pass INTEGER NOT NULL, idx INTEGER NOT NULL, "
              "seq INTEGER NOT NULL, counts TEXT, PRIMARY KEY (kind, pass, idx, seq))")
    c.commit()
    c.close()
    store = CampaignStore(db)
    cols = {r[1] for r in store.conn.execute("PRAGMA table_info(measurements)")}
    assert {"samples_us", "wire_bytes", "source"} <= cols and int(store.get_meta("schema_version")) == 2


def test_growing_a_campaign_keeps_every_stored_job(tmp_path: Path) -> None:
    small, big = _plan(samples=30, reference_every=10), _plan(samples=50, reference_every=10)
    grown = small.grown_to(50)
    assert grown.grown_from == (30,) and schedule(grown)[: len(schedule(small))] == schedule(small)
    samples = [j.index for j in schedule(grown) if j.kind == "sample"]
    assert sorted(samples) == list(range(50)) and samples[30:] != sorted(samples[30:])  # new part shuffled too
    store = CampaignStore(tmp_path / "g.sqlite")
    dev = FakeDevice()
    CampaignRunner(small, LAYOUT, FakeBuilder(), progress=False).run([DeviceTarget("fake", dev, store)])
    before = set(_all_keys(store))
    s = CampaignRunner(big, LAYOUT, FakeBuilder(), progress=False).run([DeviceTarget("fake", dev, store)])[0]
    assert s.plan == "grown" and s.already_done == len(before) and s.samples == 50
    after = _all_keys(store)
    assert before <= set(after) and len(after) == len(set(after)) == len(schedule(grown))
    assert store.plan() == grown and len(load_samples(store).indices) == 50
    again = CampaignRunner(big, LAYOUT, FakeBuilder(), progress=False).run([DeviceTarget("fake", dev, store)])[0]
    assert again.plan == "resumed" and again.measured_now == 0


def test_a_store_without_measurements_can_be_replanned(tmp_path: Path) -> None:
    store = CampaignStore(tmp_path / "r.sqlite")
    flaky = FakeDevice(transient=lambda call, counts: True)
    with pytest.raises(CampaignError):
        CampaignRunner(_plan(samples=10), LAYOUT, FakeBuilder(), progress=False).run([DeviceTarget("fake", flaky, store)])
    assert not store.holds_results()  # only transient failures: nothing measured
    s = CampaignRunner(_plan(samples=8, seed=9), LAYOUT, FakeBuilder(), progress=False).run(
        [DeviceTarget("fake", FakeDevice(), store)])[0]
    assert s.plan == "replanned" and store.plan().seed == 9
    assert len(store.rows("sample")) + len(store.failures(final=True)) == 8 and store.failures(final=False) == []


class FakeGenerator:
    """Keeps the top ``limit`` share of each layer's modules by a per-task score (like an assembler)."""

    def __init__(self, identity: str = "gen-a", offset: int = 0) -> None:
        self.tasks = ("one", "two", "three")
        self.identity = identity
        self.offset = offset
        self.calls = 0

    def __call__(self, task: str, limits):
        import torch

        self.calls += 1
        g = torch.Generator().manual_seed(sum(map(ord, task)) + self.offset)
        out = []
        for d in LAYOUT.module_counts:
            rank = torch.randperm(d, generator=g)
            out.append((rank.reshape(1, -1) < torch.floor(limits.reshape(-1, 1) * d)).float())
        return out


def test_sample_mix_sources_strata_and_generated_models(tmp_path: Path) -> None:
    from host.profiling.plan import MIX_BLOCK, STRATA, SampleMix, sample_source

    mix = SampleMix.parse("uniform=0.4,stratified=0.2,generated=0.4")
    plan = _plan(samples=100, reference_every=0, mix=mix)
    sources = [sample_source(plan, i) for i in range(100)]
    for b in range(0, 100, MIX_BLOCK):  # exact proportions in every block: any prefix and tail carry the mix
        assert Counter(sources[b : b + MIX_BLOCK]) == {"uniform": 8, "stratified": 4, "generated": 8}
    assert Counter(sources[-10:])["generated"] >= 2  # the held-out tail includes generated models
    strat = [i for i in range(100) if sources[i] == "stratified"]
    fracs = np.array([[int(g.sum()) / d for g, d in zip(sample_gates(plan, LAYOUT, i), LAYOUT.module_counts, strict=True)]
                      for i in strat[:STRATA]])
    for col in fracs.T:  # each layer visits every stratum of [0, 1] once per block of STRATA stratified samples
        strata = np.minimum((col * STRATA).astype(int), STRATA - 1)
        assert len(set(strata.tolist())) >= STRATA - 2  # rounding to whole modules may shift a boundary case
    with pytest.raises(CampaignError, match="generated model"):
        sample_gates(plan, LAYOUT, sources.index("generated"))
    with pytest.raises(ConfigError, match="SOURCE=WEIGHT"):
        SampleMix.parse("uniform=1,random=2")

    store = CampaignStore(tmp_path / "m.sqlite")
    with pytest.raises(CampaignError, match="no generator|none is loaded"):
        CampaignRunner(plan, LAYOUT, FakeBuilder(), progress=False).run([DeviceTarget("fake", FakeDevice(), store)])
    assert store.rows("sample") == []  # refused before measuring anything
    gen = FakeGenerator()
    CampaignRunner(plan, LAYOUT, FakeBuilder(), generator=gen, progress=False).run(
        [DeviceTarget("fake", FakeDevice(), store)], stop_after=50)
    drawn = {i: store.generated(i, LAYOUT) for i in range(100) if sources[i] == "generated"}
    stored = {i: s for i, s in drawn.items() if s is not None}
    assert stored and all(s.generator == "gen-a" and s.task in gen.tasks and 0 < s.limit <= 1 for s in stored.values())
    for s in stored.values():  # the stored gates are exactly the generator's for (task, limit)
        import torch

        want = gen(s.task, torch.tensor([s.limit], dtype=torch.float32))
        assert all(torch.equal(a, b[0]) for a, b in zip(s.gates, want, strict=True))
        assert sum(int(g.sum()) for g in s.gates) <= int(np.ceil(s.limit * LAYOUT.total_modules))
    # resuming with another checkpoint keeps what was drawn and draws the rest from the new one
    CampaignRunner(plan, LAYOUT, FakeBuilder(), generator=FakeGenerator("gen-b", offset=1), progress=False).run(
        [DeviceTarget("fake", FakeDevice(), store)])
    assert all(store.generated(i, LAYOUT).generator == "gen-a" for i in stored)
    assert store.generators()["gen-b"] == 40 - len(stored)
    rows = store.rows("sample")
    crashed = len(store.failures(final=True))  # the fake device crashes on all-zero gates (limit 0.01 here)
    assert Counter(r["source"] for r in rows) == {"uniform": 40, "stratified": 20, "generated": 40 - crashed}
    data = load_samples(store)
    assert Counter(data.sources.tolist()) == {"uniform": 40, "stratified": 20, "generated": 40 - crashed}
