"""``nnf report``: the page, its figures, missing inputs shown with their commands, and a real browser loading it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from host.checkpoint import shipped_checkpoint
from host.cli import main
from host.report import build_report


def _save(results: Path, name: str, result: dict, command: str) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(
        {"benchmark": name, "command": command, "written_at": "2026-12-01T00:00:00+0000", "result": result}))


def _method(acc: float, lat: float, pred: float, fits: bool, seconds: float) -> dict:
    return {"accuracy": acc, "measured_latency_ms": lat, "predicted_latency_ms": pred, "bound_latency_ms": pred,
            "measured_memory_mb": 35.0 + lat / 10, "predicted_memory_mb": 35.1, "meets_budget": fits,
            "activation_ratio": 0.3, "seconds": seconds}


def fixture_results(results: Path) -> None:
    """Result files shaped like the benchmarks' output (test data, not figures anyone reports)."""
    scenarios = []
    for task, split in (("exactly one 3", "seen"), ("exactly two 0", "unseen")):
        for budget in (2.0, 2.6):
            scenarios.append({
                "space": "numvqa", "task": task, "task_split": split, "budget_ms": budget,
                "nnfactory": _method(0.98, budget * 0.9, budget * 0.92, True, 0.03),
                "retrain": _method(0.97, budget * 0.95, budget * 0.97, True, 120.0),
                "prune_tune": {"accuracy": None, "measured_latency_ms": None, "seconds": None, "meets_budget": False,
                               "error": "Prune&Tune cannot meet latency <= 2 ms"} if budget == 2.0 else
                _method(0.95, budget * 1.02, budget * 0.98, False, 60.0),
            })
    _save(results, "baselines", {
        "scenarios": scenarios, "metric": "accuracy", "space": "numvqa",
        "mean": {"nnfactory": 0.98, "retrain": 0.97, "prune_tune": 0.95},
        "customize_seconds": {"nnfactory": 0.03, "retrain": 120.0, "prune_tune": 60.0},
        "one_time_seconds": {"nnfactory_generator_training": 5849.8, "prune_tune_unified_training": 300.0,
                             "device_campaign": None, "device_campaign_samples": 750},
        "targets": {"nnfactory_within_2_points_of_retrain": True, "nnfactory_above_prune_tune": True,
                    "nnfactory_meets_every_budget": True, "speedup_vs_retrain": 4000.0, "speedup_at_least_1000": True},
        "device": {"name": "test-device", "latency_statistic": "p90", "runtime": "torchscript"},
        "baseline_init": {"init": "generator"},
        "checkpoint": {"model_sha256": "0" * 64, "step": 1},  # not the shipped generator: flagged as out of date
        "settings": {"test_per_task": 100, "retrain": {"train": {"steps": 10, "batch_size": 8}}},
    }, "python benchmarks/baselines.py --json")
    limits = ["0.05", "0.1", "0.3", "1.0"]
    _save(results, "numvqa_accuracy", {
        "seen": {k: {"accuracy": 0.9 + 0.02 * i, "activation_ratio": min(float(k), 0.36)} for i, k in enumerate(limits)},
        "unseen": {k: {"accuracy": 0.85 + 0.03 * i, "activation_ratio": min(float(k), 0.36)} for i, k in enumerate(limits)},
        "per_task": {"exactly two 0": 0.99, "at least one 8": 1.0},
        "per_limit_task": {k: {"exactly two 0": 0.9, "at least one 8": 0.95} for k in limits},
        "unseen_tasks": ["exactly two 0", "at least one 8"],
        "tasks": {"seen": 51, "unseen": 2}, "per_task_samples": 200, "checkpoint_step": 7000,
        "ratio_never_above_limit": True,
    }, "python benchmarks/numvqa_accuracy.py --json")
    _save(results, "attrod_accuracy", {
        "seen": {k: {"map50": 0.9, "activation_ratio": 0.2} for k in ("0.1", "0.3", "0.5")},
        "unseen": {k: {"map50": 0.85, "activation_ratio": 0.2} for k in ("0.1", "0.3", "0.5")},
        "per_task": {"crimson 3": {"split": "unseen", "map50": {"0.1": 0.8, "0.3": 0.9, "0.5": 0.91}},
                     "white 1": {"split": "seen", "map50": {"0.1": 0.9, "0.3": 0.95, "0.5": 0.95}}},
        "tasks": {"seen": 1, "unseen": 1}, "per_task_samples": 10,
    }, "python benchmarks/attrod_accuracy.py --json")
    _save(results, "predictor_accuracy", {
        "samples": {"100": {"latency_within_10pct": 0.89, "memory_within_5pct": 1.0},
                    "300": {"latency_within_10pct": 0.97, "memory_within_5pct": 1.0}},
        "baseline_linear": {"100": {"latency_within_10pct": 0.82}, "300": {"latency_within_10pct": 0.86}},
        "test_subnets": 100, "device": "local-cpu (AMD EPYC, 2 cores)",
    }, "python benchmarks/predictor_accuracy.py --json")


def test_a_comparison_of_two_spaces_keeps_their_metrics_apart(tmp_path):
    from host.baselines.compare import aggregate, merge_results

    results = tmp_path / "results"
    fixture_results(results)
    doc = json.loads((results / "baselines.json").read_text())
    numvqa = doc["result"]
    attrod_rows = [{**r, "space": "attrod", "task": "crimson 3"} for r in numvqa["scenarios"][:2]]
    attrod = {**numvqa, "space": "attrod", "metric": "map50", "scenarios": attrod_rows, **aggregate(attrod_rows)}
    merged = merge_results([numvqa, attrod], {"other": "no generator checkpoint"})
    assert set(merged["by_space"]) == {"numvqa", "attrod"} and len(merged["scenarios"]) == 6
    _save(results, "baselines", merged, "python benchmarks/baselines.py --json")
    out = tmp_path / "r"
    report = build_report(out, results_dir=results, checkpoints=[])
    page = (out / "index.html").read_text()
    assert "<h3>attrod</h3>" in page and "<th>map50</th>" in page and "<th>accuracy</th>" in page
    assert "was not compared: no generator checkpoint" in page
    assert {"fig10_quality_vs_budget_numvqa.png", "fig10_quality_vs_budget_attrod.png"} <= set(report.figures)


@pytest.mark.slow  # a whole report (~5 s)
def test_missing_inputs_are_shown_with_their_commands(tmp_path):
    out = tmp_path / "report"
    report = build_report(out, results_dir=tmp_path / "no-results")
    page = (out / "index.html").read_text()
    missing = {Path(m["path"]).name: m for m in report.missing}
    assert {"numvqa_accuracy.json", "baselines.json", "predictor_accuracy.json", "attrod_accuracy.json"} <= set(missing)
    assert "python benchmarks/baselines.py" in missing["baselines.json"]["command"]
    assert "python benchmarks/numvqa_accuracy.py" in page and "Missing:" in page
    assert not re.search(r"<th>NN-Factory s</th>", page)  # no Table 4 rows without their data
    # figures from the shipped checkpoint need no result file
    assert {"fig11_ratio_vs_limit_numvqa.png", "fig12_training_numvqa.png", "fig15_tasks_numvqa.png",
            "fig15_limits_numvqa.png"} <= set(report.figures)
    assert report.failed == []
    for name in report.figures:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # builds every figure (~10 s); the browser and missing-input tests stay fast
def test_report_from_result_files_and_cli(tmp_path, capsys):
    results = tmp_path / "results"
    fixture_results(results)
    out = tmp_path / "r"
    assert main(["report", "--out", str(out), "--results", str(results), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["failed"] == []
    assert summary["missing"] == []
    figs = set(summary["figures"])
    assert {"fig10_quality_vs_budget_numvqa.png", "fig13_predictor_accuracy.png", "fig14_unseen_tasks_numvqa.png",
            "fig14_unseen_tasks_attrod.png",
            "predicted_vs_measured_numvqa.png"} <= figs
    page = (out / "index.html").read_text()
    assert "Prune&amp;Tune cannot meet latency &lt;= 2 ms" in page  # a method that missed is said so
    assert "4000×" in page and "made by `python benchmarks/baselines.py --json`" in page
    assert "Out of date:</b> these NN-Factory models were generated from checkpoint sha256 000000000000" in page
    for img in re.findall(r'<img src="([^"]+)"', page):
        assert (out / img).is_file()
    # a second run replaces the report in place; a directory that is not a report is refused
    assert main(["report", "--out", str(out), "--results", str(results)]) == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    assert main(["report", "--out", str(other)]) == 2
    assert "without a report in it" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "x"


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/test.sh installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,2000", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.mark.browser
def test_report_in_a_real_browser(tmp_path):
    results = tmp_path / "results"
    fixture_results(results)
    out = tmp_path / "report"
    report = build_report(out, results_dir=results, checkpoints=[shipped_checkpoint("numvqa")])
    assert len(report.figures) >= 8
    browser = _browser()
    try:
        browser.set_page_load_timeout(60)
        browser.get((out / "index.html").as_uri())
        assert browser.title == "NN-Factory evaluation report"
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth,"
            " i.naturalHeight]);")
        assert len(images) == len(report.figures)
        for src, complete, width, height in images:
            assert complete and width > 100 and height > 100, f"{src} did not decode"
        headings = browser.execute_script("return Array.from(document.querySelectorAll('h2')).map(h => h.id);")
        for anchor in ("table2", "table3", "table4", "fig10", "fig11", "fig12", "fig13", "fig14", "fig15", "scatter"):
            assert anchor in headings
        logs = browser.get_log("browser")
        assert [entry for entry in logs if entry["level"] in ("SEVERE", "WARNING")] == []
    finally:
        browser.quit()
