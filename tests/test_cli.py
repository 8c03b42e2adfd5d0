"""The `nnf` command line: one vocabulary (old spellings as deprecated aliases), help on every option."""

from __future__ import annotations

import argparse

import pytest

from host.cli import build_parser
from host.commands import options


@pytest.fixture(autouse=True)
def _fresh_notes():
    options._noted.clear()
    yield
    options._noted.clear()


def _all_parsers(p: argparse.ArgumentParser, path: tuple[str, ...] = ("nnf",)):
    yield path, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield from _all_parsers(sp, (*path, name))


def test_every_option_has_help() -> None:
    missing = [(" ".join(path), a.option_strings or a.dest) for path, p in _all_parsers(build_parser())
               for a in p._actions if not isinstance(a, argparse._SubParsersAction)
               and (a.help is None or (a.help != argparse.SUPPRESS and not a.help.strip()))]
    assert not missing, missing


@pytest.mark.parametrize(("given", "canonical", "agent"), [
    ("tflite", "tflite", "litert"), ("litert", "tflite", "litert"), ("onnxruntime", "onnx", "onnxruntime"),
    ("torch_export", "torch-export", "torch_export"), ("Torch-Export", "torch-export", "torch_export"),
    ("torchscript", "torchscript", "torchscript"),
])
def test_runtime_names_and_aliases(given: str, canonical: str, agent: str, capsys) -> None:
    assert options.runtime_type(given) == canonical
    assert options.agent_runtime(canonical) == agent
    err = capsys.readouterr().err
    assert ("deprecated" in err) == (given != canonical and given.lower() != canonical)


def test_unknown_runtime_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["export", "m", "--format", "tflight"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown runtime/format 'tflight'" in err and "Did you mean 'tflite'" in err


def test_old_option_spellings_still_work_with_a_note(capsys) -> None:
    p = build_parser()
    new = p.parse_args(["devices", "profile", "box", "m.onnx", "--input-shape", "1,3,8,8", "--warmup-runs", "2",
                        "--runtime", "onnx"])
    assert capsys.readouterr().err == ""
    old = p.parse_args(["devices", "profile", "box", "m.onnx", "--input", "1x3x8x8", "--warmup", "2",
                        "--runtime", "onnxruntime"])
    err = capsys.readouterr().err
    assert (old.input_shape, old.warmup_runs, old.runtime) == (["1x3x8x8"], 2, "onnx")
    assert (new.input_shape, new.warmup_runs, new.runtime) == (["1,3,8,8"], 2, "onnx")
    assert options.parse_shape(old.input_shape[0]) == options.parse_shape(new.input_shape[0]) == (1, 3, 8, 8)
    for old_name, new_name in (("--input", "--input-shape"), ("--warmup", "--warmup-runs"),
                               ("'onnxruntime'", "'onnx'")):
        assert f"{old_name} is deprecated" in err and f"use {new_name}" in err
    prof = p.parse_args(["profile", "--device", "d", "--backbone", "resnet_tiny", "--warmup", "3",
                         "--runtime", "litert", "--target", "cuda:1"])
    assert (prof.warmup_runs, prof.runtime, prof.target) == (3, "tflite", "cuda:1")
    assert p.parse_args(["profile", "--device", "d", "--backbone", "b"]).warmup_runs == 5
    pm = p.parse_args(["profile-model", "m.pt", "--agent", "127.0.0.1:1", "--device", "cuda", "--warmup", "2"])
    assert (pm.target, pm.warmup_runs, pm.runtime) == ("cuda", 2, None)
    assert "--device is deprecated" in capsys.readouterr().err
    for argv in (["agent", "info", "--agent", "localhost"],
                 ["generate", "--task", "t", "--out", "o", "--device", "d", "--live", "--agent", "localhost"],
                 ["profile", "--device", "d", "--backbone", "b", "--agent", "localhost"]):
        with pytest.raises(SystemExit):
            p.parse_args(argv)
        assert "give the agent's port too" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["localhost", "127.0.0.1:", "host:99999", "::1:50051", ":50051"])
def test_agent_address_needs_a_port(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="HOST:PORT"):
        options.agent_address(bad)


def test_agent_address_ok() -> None:
    assert options.agent_address("localhost:50051") == "localhost:50051"
    assert options.agent_address("[::1]:50051") == "[::1]:50051"


@pytest.mark.parametrize("bad", ["", "0,3", "1,a", "-1x2"])
def test_bad_shapes(bad: str) -> None:
    from host.errors import ConfigError

    with pytest.raises(ConfigError, match="--input-shape"):
        options.parse_shape(bad)


def test_version(capsys) -> None:
    import host
    from host.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"nnf (NN-Factory) {host.__version__}"


@pytest.mark.parametrize(("argv", "kind", "needle"), [
    (["generate", "--task", "exactly two 0", "--activation-limit", "3", "--out", "{tmp}/m"], "ConfigError",
     "outside (0, 1]"),
    (["export", "{tmp}/none", "--format", "tflight"], "UsageError", "Did you mean 'tflite'"),
    (["export", "{tmp}/none", "--format", "onnx"], None, "is not a compact model directory"),
    (["fit", "--device", "nowhere", "--campaigns-dir", "{tmp}/c"], None, "nowhere"),
])
def test_json_errors_are_one_object_on_stdout(argv, kind, needle, tmp_path, capsys) -> None:
    import json

    from host.cli import main

    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--json"]
    rc = main(argv)  # usage errors too return 2 (they do not raise SystemExit out of main)
    out, err = capsys.readouterr()
    assert rc == 2
    lines = out.strip().splitlines()
    obj = json.loads(lines[-1])
    assert set(obj) == {"error", "type", "hint"} and needle in obj["error"] and obj["hint"]
    assert kind is None or obj["type"] == kind
    assert needle in err  # humans read stderr


@pytest.mark.parametrize("where", ["under_a_file", "proc", "file_for_dir"])
def test_impossible_out_is_checked_before_work(where: str, tmp_path, capsys) -> None:
    import json

    from host.cli import main

    f = tmp_path / "f"
    f.write_text("x")
    out = {"under_a_file": f / "model", "proc": "/proc/nnf-model", "file_for_dir": f}[where]
    rc = main(["generate", "--task", "exactly two 0", "--activation-limit", "0.3", "--out", str(out), "--json"])
    obj = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 2 and obj["type"] == "ConfigError" and "--out" in obj["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_missing_extra_is_checked_before_writing(tmp_path, monkeypatch, capsys) -> None:
    import json
    import sys

    from host.cli import main

    monkeypatch.setitem(sys.modules, "litert_torch", None)
    rc = main(["generate", "--task", "exactly two 0", "--activation-limit", "0.3", "--out", str(tmp_path / "m"),
               "--format", "tflite", "--json"])
    obj = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 2 and obj["type"] == "MissingExtraError"
    assert "torch==" in obj["hint"] and "[tflite]'" in obj["hint"]
    assert list(tmp_path.iterdir()) == []


def test_third_party_noise_is_off_unless_verbose(monkeypatch) -> None:
    import logging
    import os

    from host.cli import NOISY_LOGGERS, quiet_third_party

    for var in ("TF_CPP_MIN_LOG_LEVEL", "LITERT_TORCH_SHOW_PROGRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GLOG_minloglevel", "0")  # a value the user set is kept
    levels = {n: logging.getLogger(n).level for n in NOISY_LOGGERS}
    try:
        quiet_third_party(verbose=True)
        assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
        quiet_third_party(verbose=False)
        env = os.environ
        assert (env["TF_CPP_MIN_LOG_LEVEL"], env["LITERT_TORCH_SHOW_PROGRESS"], env["GLOG_minloglevel"]) == ("3", "n", "0")
        assert all(logging.getLogger(n).level == logging.ERROR for n in NOISY_LOGGERS)
    finally:
        for n, lvl in levels.items():
            logging.getLogger(n).setLevel(lvl)
