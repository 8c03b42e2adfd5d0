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
from host.profiling.plan import CampaignPlan, MeasureSettings
from host.profiling.runner import CampaignRunner, DeviceTarget
from host.profiling.store import CampaignStore
from host.supernets import build_supernet
from tests.support.campaign_fakes import FakeDevice


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
                        measure=MeasureSettings(repeats=3))
    store = CampaignStore(tmp / "c.sqlite")
    CampaignRunner(plan, layout, ExtractingBuilder(net), progress=False).run([DeviceTarget("dev", LawDevice(), store)])
    entry = fit_store(store, test=10)
    info = store.get_meta("device_info")
    store.close()
    profiles = tmp / "profiles"
    path = write_profile_entry("dev-1", info, entry, profiles)
    return path, profiles, layout


def test_profile_file_is_plain_json_with_figures(fitted) -> None:
    path, profiles, layout = fitted
    data = json.loads(path.read_text())
    assert data["format"] == "nnfactory.device-profile" and data["device"]["cpu_model"] == "FakeCPU"
    e = data["profiles"]["resnet_tiny/torchscript"]
    assert e["layout_fingerprint"] == layout.fingerprint()
    assert e["samples"] == {"train": 30, "test": 10}
    assert set(e["accuracy"]["latency"]) == {"linear", "improved"}
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
    with pytest.raises(ConfigError, match="no profile for supernet"):
        load_predictor("dev-1", layout, runtime="litert", root=profiles)


def test_shipped_profiles_load(tmp_path: Path) -> None:
    """Every profile shipped in device_profiles/ parses and matches this NN-Factory's supernets."""
    root = Path(__file__).resolve().parents[1] / "device_profiles"
    files = sorted(root.glob("*.json"))
    for f in files:
        data = read_profile(f.stem, root)
        for entry in data["profiles"].values():
            layout = build_supernet(entry["config"]).gate_layout()
            pred = load_predictor(f.stem, layout, entry["runtime"], root=root)
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
    assert default_profiles_dir() == tmp_path / "data" / "nn-factory" / "device_profiles"  # never the source tree
    assert profile_dirs() == [default_profiles_dir(), shipped]
    assert profile_path("dev-amd-epyc-2c") == shipped / "dev-amd-epyc-2c.json"
    shipped_entries = set(read_profile("dev-amd-epyc-2c")["profiles"])
    # refitting a shipped device writes the user's copy, keeping the shipped entries it does not replace
    entry = {**next(iter(read_profile("dev-amd-epyc-2c")["profiles"].values())), "config": "x_cfg"}
    out = write_profile_entry("dev-amd-epyc-2c", {"cpu_model": "test"}, entry)
    assert out == default_profiles_dir() / "dev-amd-epyc-2c.json" and profile_path("dev-amd-epyc-2c") == out
    assert set(read_profile("dev-amd-epyc-2c")["profiles"]) == shipped_entries | {f"x_cfg/{entry['runtime']}"}
    assert "dev-amd-epyc-2c" in list_devices()
    monkeypatch.setenv("NNF_PROFILES_DIR", str(tmp_path / "mine"))
    assert default_profiles_dir() == tmp_path / "mine"
