"""Device profiles: fit from a campaign store, atomic JSON, fingerprint checks, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from host.errors import ConfigError, SpecError
from host.gates import GateLayout, random_gates
from host.profiling.build import ExtractingBuilder
from host.profiling.device_profile import fit_store, load_predictor, read_profile, write_profile_entry
from host.profiling.plan import CampaignPlan, MeasureSettings, SampleMix
from host.profiling.runner import CampaignRunner, DeviceTarget
from host.profiling.store import CampaignStore
from host.supernets import build_supernet
from tests.support.campaign_fakes import FakeDevice

# its module fixture runs a 40-subnet campaign: under xdist keep the module on one worker so it is built once
pytestmark = pytest.mark.xdist_group("device_profile")


class LawDevice(FakeDevice):
    """Latency from per-layer counts of resnet_tiny (known law); memory from the artifact's size."""

    def measure(self, sha256, runtime, input_shape, settings):
        blob = self.blobs[sha256]
        self.measured += 1
        lat = 200.0 + 0.001 * len(blob)  # bigger subnet -> slower, linear in weights
        from host.profiling.measurers import Measurement

        return Measurement(lat, lat, lat, lat, 0.0, 5, int(3e6 + 1.25 * len(blob)), "vmhwm_reset", {})


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, Path, GateLayout]:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = build_supernet("resnet_tiny")
    layout = net.gate_layout()
    tmp = tmp_path_factory.mktemp("prof")
    plan = CampaignPlan(backbone="resnet_tiny", layout_fingerprint=layout.fingerprint(), runtime="torchscript",
                        input_shape=tuple(net.input_shape), samples=40, seed=1, reference_every=20,
                        measure=MeasureSettings(repeats=3), mix=SampleMix(uniform=0.7, stratified=0.3))
    store = CampaignStore(tmp / "c.sqlite")
    CampaignRunner(plan, layout, ExtractingBuilder(net), progress=False).run([DeviceTarget("dev", LawDevice(), store)])
    entry = fit_store(store, test=10)
    info = store.get_meta("device_info")
    store.close()
    profiles = tmp / "profiles"
    path = write_profile_entry("dev-1", info, entry, profiles)
    return path, profiles, layout


@pytest.fixture(scope="module")
def fitted_store(fitted) -> Path:
    return fitted[0].parents[1] / "c.sqlite"


def test_profile_file_is_plain_json_with_figures(fitted) -> None:
    path, profiles, layout = fitted
    data = json.loads(path.read_text())
    assert data["format"] == "nnfactory.device-profile" and data["device"]["cpu_model"] == "FakeCPU"
    e = data["profiles"]["resnet_tiny/torchscript"]
    assert e["layout_fingerprint"] == layout.fingerprint()
    assert e["samples"] == {"train": 30, "test": 10}
    assert set(e["accuracy"]["latency"]) == {"linear", "improved"}
    assert sorted(e["percentiles"]) == ["p50", "p90", "p99"] and e["default_percentile"] == "p90"
    for block in e["percentiles"].values():
        assert block["margin"]["n"] == 10 and not block["margin"]["guaranteed"]  # 10 held out: too few for 99 %
        assert 0 <= block["margin"]["value"] < 0.5
    assert e["memory_margin"]["n"] == 10
    assert e["fit_mix"]["train"] == {"stratified": 8, "uniform": 22} and e["fit_mix"]["test"] == {"stratified": 4, "uniform": 6}
    assert any("too few for a 99% margin" in w for w in e["warnings"])
    refs = e["references"]
    assert refs["ratios"] == [1.0, 0.5, 0.25] and len(refs["gates"]) == 3 and refs["rounds"] == 3
    assert sorted(refs["latency_us"]) == ["p50", "p90", "p99"] and len(refs["peak_bytes"]) == 3
    # memory = 3 MB + 1.25 × artifact size: parameter bytes dominate the artifact, so the fit is close
    assert e["accuracy"]["memory"]["within_5pct"] >= 0.9
    assert not list(profiles.glob(".*.tmp"))  # atomic write left no temp file


def test_predictor_predicts_batched_gates(fitted) -> None:
    _, profiles, layout = fitted
    pred = load_predictor("dev-1", layout, root=profiles)
    g = torch.Generator().manual_seed(3)
    gates = [random_gates(layout, r, generator=g) for r in (0.2, 0.6, 1.0)]
    batched = [torch.stack([x[i] for x in gates]) for i in range(layout.num_layers)]
    lat, mem = pred(batched)
    assert lat.shape == (3,) and mem.shape == (3,)
    assert lat[0] < lat[1] < lat[2] and mem[0] < mem[2]


def test_bad_profiles(fitted, tmp_path: Path) -> None:
    _, profiles, layout = fitted
    with pytest.raises(ConfigError, match="no device profile for 'dev-2'.*Did you mean 'dev-1'"):
        read_profile("dev-2", profiles)
    other = build_supernet("vit_tiny").gate_layout()
    with pytest.raises(ConfigError, match="no profile for supernet 'vit_tiny'"):
        load_predictor("dev-1", other, root=profiles)
    changed = GateLayout(layout.backbone, layout.config, layout.layers[:-1])
    with pytest.raises(SpecError, match="different gate layout"):
        load_predictor("dev-1", changed, root=profiles)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SpecError, match="unreadable"):
        read_profile("broken", tmp_path)
    with pytest.raises(ConfigError, match="letters, digits"):
        read_profile("../etc/passwd", tmp_path)
    with pytest.raises(ConfigError, match="profiled for resnet_tiny on runtime 'torchscript', not on 'tflite'.*"
                                          "--runtime tflite"):
        load_predictor("dev-1", layout, runtime="litert", root=profiles)
    with pytest.raises(ConfigError, match="choose one of 50, 90, 99"):
        load_predictor("dev-1", layout, root=profiles, percentile=95)


def test_shipped_profiles_load(tmp_path: Path) -> None:
    """Every profile shipped in device_profiles/ parses and matches this NN-Factory's supernets."""
    root = Path(__file__).resolve().parents[1] / "device_profiles"
    files = sorted(root.glob("*.json"))
    for f in files:
        data = read_profile(f.stem, root)
        for entry in data["profiles"].values():
            layout = build_supernet(entry["config"]).gate_layout()
            pred = load_predictor(f.stem, layout, entry["runtime"], root=root, percentile=entry["default_percentile"])
            assert pred.latency_margin > 0 and pred.memory_margin >= 0 and entry["references"]["gates"]
            assert entry["fit_mix"]["test"].get("generated", 0) > 0  # held out on generated models too
            lat, mem = pred.predict_counts(np.array([layout.module_counts]))
            assert lat[0] > 0 and mem[0] > 0
            # the structure block follows the supernet as built now (scripts/recalibrate_structure.py)
            from host.profiling.predictor import _spec_for_counts

            net = build_supernet(entry["config"])
            rng = np.random.default_rng(0)
            for counts in ([*layout.module_counts], [int(rng.integers(1, d + 1)) for d in layout.module_counts]):
                spec = _spec_for_counts(net, counts)
                got = pred.structure.param_bytes(np.array([counts]))[0]
                assert abs(got - spec.param_bytes()) <= 1e-6 * spec.param_bytes(), (f.name, entry["config"])


def test_profiles_are_written_to_the_user_dir_and_read_from_it_then_the_shipped_ones(monkeypatch, tmp_path) -> None:
    from host.profiling.device_profile import (
        default_profiles_dir,
        list_devices,
        profile_dirs,
        profile_path,
        read_profile,
        write_profile_entry,
    )

    monkeypatch.delenv("NNF_PROFILES_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    shipped = Path(__file__).resolve().parents[1] / "device_profiles"
    name = sorted(shipped.glob("*.json"))[0].stem  # a profile that ships with NN-Factory
    assert default_profiles_dir() == tmp_path / "data" / "nn-factory" / "device_profiles"  # never the source tree
    assert profile_dirs() == [default_profiles_dir(), shipped]
    assert profile_path(name) == shipped / f"{name}.json"
    shipped_entries = set(read_profile(name)["profiles"])
    # refitting a shipped device writes the user's copy, keeping the shipped entries it does not replace
    entry = {**next(iter(read_profile(name)["profiles"].values())), "config": "x_cfg"}
    out = write_profile_entry(name, {"cpu_model": "test"}, entry)
    assert out == default_profiles_dir() / f"{name}.json" and profile_path(name) == out
    assert set(read_profile(name)["profiles"]) == shipped_entries | {f"x_cfg/{entry['runtime']}"}
    assert name in list_devices()
    monkeypatch.setenv("NNF_PROFILES_DIR", str(tmp_path / "mine"))
    assert default_profiles_dir() == tmp_path / "mine"


def test_calibrated_margin_is_the_conformal_order_statistic() -> None:
    from host.profiling.device_profile import calibrated_margin

    pred = np.full(199, 100.0)
    true = 100.0 * (1 + np.linspace(-0.05, 0.10, 199))  # relative errors -5 % .. +10 %, evenly spread
    m = calibrated_margin(pred, true, 0.99)
    k = int(np.ceil(200 * 0.99))  # the 198th smallest of 199
    assert m["guaranteed"] and m["order_statistic"] == k and m["n"] == 199
    assert m["value"] == pytest.approx(np.sort(true / pred - 1)[k - 1])
    assert m["covered_heldout"] >= 0.99 and m["largest_error"] == pytest.approx(0.10)
    few = calibrated_margin(pred[-20:], true[-20:], 0.99)  # 20 held out: not enough for 99 %, the largest is used
    assert not few["guaranteed"] and few["value"] == pytest.approx(few["largest_error"])
    assert calibrated_margin(np.array([10.0, 10.0]), np.array([9.0, 9.5]))["value"] == 0.0  # never negative
    with pytest.raises(ConfigError):
        calibrated_margin(pred, true, 1.0)


def test_predictor_bounds_add_the_margin_and_rescale(fitted) -> None:
    _, profiles, layout = fitted
    pred = load_predictor("dev-1", layout, root=profiles, percentile=90)
    assert pred.percentile == "p90" and pred.runtime == "torchscript"
    counts = np.array([layout.module_counts, [max(1, d // 3) for d in layout.module_counts]])
    lat, mem = pred.predict_counts(counts)
    blat, bmem = pred.bound_counts(counts)
    np.testing.assert_allclose(blat, lat * (1 + pred.latency_margin))
    np.testing.assert_allclose(bmem, mem * (1 + pred.memory_margin))
    slow = pred.rescaled(latency=1.3)
    np.testing.assert_allclose(slow.predict_counts(counts)[0], lat * 1.3)
    np.testing.assert_allclose(slow.predict_counts(counts)[1], mem)
    assert pred.margins()["latency"] == pred.latency_margin and pred.margins()["coverage"] == 0.99


def test_version_1_entry_is_refused_with_advice(fitted, tmp_path: Path) -> None:
    path, _, layout = fitted
    data = json.loads(path.read_text())
    entry = data["profiles"]["resnet_tiny/torchscript"]
    old = {k: v for k, v in entry.items() if k not in ("percentiles", "default_percentile", "memory_margin")}
    old["latency"] = entry["percentiles"]["p50"]["latency"]
    old["latency_statistic"] = "p10"
    (tmp_path / "old.json").write_text(json.dumps({**data, "version": 1, "profiles": {"resnet_tiny/torchscript": old}}))
    with pytest.raises(SpecError, match="predicts the p10 of each subnet's runs.*re-fit it"):
        load_predictor("old", layout, root=tmp_path)


def test_cli_fit_warns_prints_margins_and_hints(fitted_store: Path, tmp_path: Path, capsys) -> None:
    from host.cli import main

    profiles = tmp_path / "p"
    rc = main(["fit", "--device", "dev-9", "--store", str(fitted_store), "--profiles-dir", str(profiles), "--test",
               "100", "--train-limit", "500", "--percentiles", "50,90"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "warning: held out 20 subnets instead of the 100 asked" in err  # never more than half of the campaign
    assert "warning: --train-limit 500, but only 20 training subnets exist: fitted on 20" in err
    assert "fitted on 20 subnets (stratified" in out and "tested on 20 held-out subnets" in out
    assert "p50 latency" in out and "p90 latency (default)" in out and "p99" not in out
    assert "margin    +" in out and "too few for that guarantee" in out
    assert "next: nnf generate --task TASK --out OUT --device dev-9 --latency-ms MS --percentile 90" in out
    assert "next: nnf devices fingerprint dev-9 --backbone resnet_tiny --runtime torchscript" in out
    entry = json.loads((profiles / "dev-9.json").read_text())["profiles"]["resnet_tiny/torchscript"]
    assert sorted(entry["percentiles"]) == ["p50", "p90"] and entry["samples"] == {"train": 20, "test": 20}
    assert main(["fit", "--device", "dev-9", "--store", str(fitted_store), "--profiles-dir", str(profiles),
                 "--percentiles", "95"]) == 2
    assert "choose one of 50, 90, 99" in capsys.readouterr().err
