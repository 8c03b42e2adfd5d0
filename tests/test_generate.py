"""Generation from a checkpoint: CLI summary, exactness of the extracted model, evaluation, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from host.artifact import load_compact
from host.cli import main
from host.errors import SpecError
from host.generate import ModelFactory, evaluate_generated
from host.tasks import SPACES_DIR, get_family
from host.training import evaluate


@pytest.fixture(scope="module")
def run_dir(tiny_numvqa_run):
    return tiny_numvqa_run  # tests/conftest.py: built once per session


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_generate_summary_and_exact_model(run_dir, tmp_path, capsys):
    out = tmp_path / "model"
    rc = main(["generate", "--space", "numvqa", "--task", "exactly two 0", "--activation-limit", "0.3",
               "--out", str(out), "--checkpoint", str(run_dir), "--json"])
    assert rc == 0
    s = _last_json(capsys)
    assert s["task"] == "exactly two 0" and s["task_split"] == "unseen" and s["activation_limit"] == 0.3
    assert 0 < s["activation_ratio"] <= 0.3
    assert s["params"] > 0 and s["macs"] > 0 and s["seconds"] > 0
    compact = load_compact(out)
    assert compact.spec.meta["task"] == "exactly two 0"
    # The saved model computes what the gated supernet computes with the assembler's gates.
    factory = ModelFactory.load(space="numvqa", checkpoint=run_dir)
    gates = factory.gates(["exactly two 0"], [0.3]).request(0)
    assert abs(compact.spec.activation_ratio - s["activation_ratio"]) < 1e-6
    x = torch.rand(5, 1, 56, 56)
    with torch.no_grad():
        ref = factory.models.supernet(x, gates=gates)
        assert torch.allclose(compact(x), ref, atol=1e-4)
    # Composed (never listed) attribute combinations generate too.
    rc = main(["generate", "--task", "exactly+four+7", "--activation-limit", "0.1", "--out", str(tmp_path / "m2"),
               "--checkpoint", str(run_dir), "--json"])
    assert rc == 0 and _last_json(capsys)["activation_ratio"] <= 0.1


def test_generated_model_evaluation_matches_gated_supernet(run_dir):
    factory = ModelFactory.load(space="numvqa", checkpoint=run_dir)
    names = ["exactly one 0", "exactly two 0", "at least two even"]
    res = evaluate_generated(factory, [0.2, 1.0], tasks=names, per_task=8, seed=5)
    space = factory.space
    sampler = get_family(space.family).make_sampler(space, "test")
    ids = torch.tensor([space.names().index(n) for n in names])
    ref = evaluate(factory.models, sampler.balanced(ids, 8, seed=5), [0.2, 1.0])
    for lim, key in ((0.2, "0.2"), (1.0, "1.0")):
        for n, i in zip(names, ids.tolist(), strict=True):
            assert res["per_limit"][key][n]["accuracy"] == pytest.approx(ref[lim]["per_task"][i])
            assert res["per_limit"][key][n]["activation_ratio"] <= lim
    assert set(res["seen"]) == {"0.2", "1.0"} and set(res["unseen"]) == {"0.2", "1.0"}


def test_bad_requests_write_nothing(run_dir, tmp_path, capsys):
    out = tmp_path / "never"
    for argv, msg in (
        (["--task", "exactly too 0", "--activation-limit", "0.3"], "Did you mean 'exactly two 0'"),
        (["--task", "exactly+two+zero", "--activation-limit", "0.3"], "unknown attribute 'zero'"),
        (["--task", "exactly two 0", "--activation-limit", "0"], "outside (0, 1]"),
        (["--task", "exactly two 0", "--activation-limit", "1.5"], "outside (0, 1]"),
    ):
        rc = main(["generate", *argv, "--out", str(out), "--checkpoint", str(run_dir)])
        assert rc == 2 and msg in capsys.readouterr().err
        assert not out.exists()


def test_checkpoint_for_another_space_or_backbone(run_dir, tmp_path, capsys):
    text = (SPACES_DIR / "numvqa.toml").read_text()
    other = tmp_path / "digits.toml"
    other.write_text(text.replace('name = "numvqa"', 'name = "digits"'))
    rc = main(["generate", "--space", str(other), "--task", "exactly one 0", "--activation-limit", "0.3",
               "--out", str(tmp_path / "x"), "--checkpoint", str(run_dir)])
    assert rc == 2 and "trained for task space 'numvqa', not 'digits'" in capsys.readouterr().err
    changed = tmp_path / "numvqa.toml"
    changed.write_text(text.replace('"exactly two 6",\n', ""))  # an unseen task becomes trained: still fine
    assert ModelFactory.load(space=str(changed), checkpoint=run_dir).space.task("exactly two 6").split == "seen"
    changed.write_text(text.replace('unseen = [\n', 'unseen = [\n  "exactly one 0",\n'))  # trained, now held out
    with pytest.raises(SpecError, match="different definition.*trained on 'exactly one 0'"):
        ModelFactory.load(space=str(changed), checkpoint=run_dir)
    changed.write_text(text.replace("cell_size = 28", "cell_size = 28\nextra_param = 1"))
    with pytest.raises(SpecError, match="different definition.*params differ"):
        ModelFactory.load(space=str(changed), checkpoint=run_dir)
    with pytest.raises(SpecError, match="holds backbone 'resnet_numvqa', not 'resnet_tiny'"):
        ModelFactory.load(space="numvqa", checkpoint=run_dir, backbone="resnet_tiny")
    assert not (tmp_path / "x").exists()


def test_corrupt_checkpoint_is_refused(run_dir, tmp_path, capsys):
    import shutil

    latest = json.loads((run_dir / "latest.json").read_text())["latest"]
    bad = tmp_path / "bad"
    shutil.copytree(run_dir / latest, bad)
    blob = bytearray((bad / "model.safetensors").read_bytes())
    blob[len(blob) // 2] ^= 0x55
    (bad / "model.safetensors").write_bytes(bytes(blob))
    rc = main(["generate", "--task", "exactly one 0", "--activation-limit", "0.3", "--out", str(tmp_path / "y"),
               "--checkpoint", str(bad)])
    assert rc == 2 and "corrupt" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_cli_eval_json(run_dir, capsys):
    rc = main(["eval", "--space", "numvqa", "--checkpoint", str(run_dir), "--limits", "0.3",
               "--tasks", "exactly one 0,exactly two 0", "--per-task", "4", "--json"])
    assert rc == 0
    res = _last_json(capsys)
    assert set(res["seen"]["0.3"]) >= {"accuracy", "activation_ratio"} and res["unseen"]["0.3"]["tasks"] == 1


def test_shipped_checkpoint_generates(tmp_path, capsys):
    from host.checkpoint import shipped_checkpoint

    path = shipped_checkpoint("numvqa")
    assert Path(path, "checkpoint.json").is_file()
    rc = main(["generate", "--space", "numvqa", "--task", "exactly two 0", "--activation-limit", "0.3",
               "--out", str(tmp_path / "m"), "--json"])
    assert rc == 0
    s = _last_json(capsys)
    assert s["activation_ratio"] <= 0.3 and s["checkpoint"] == str(path)


def test_inference_does_not_import_training() -> None:
    """Generation, evaluation and export load checkpoints through host.models, never the trainer: no module
    they reach imports host.training, not even lazily inside a function (a static walk of the imports)."""
    import ast

    root = Path(__file__).resolve().parents[1]

    def imports(module: str) -> set[str]:
        path = root / (module.replace(".", "/") + ".py")
        if not path.is_file():
            path = root / module.replace(".", "/") / "__init__.py"
        if not path.is_file():
            return set()
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("host")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("host") and not node.level:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}  # `from host.x import submodule`
        return found

    start = ["host.generate", "host.commands.eval", "host.commands.generate", "host.commands.export", "host.exports"]
    seen, todo, via = set(start), list(start), {}
    while todo:
        mod = todo.pop()
        for dep in imports(mod):
            parts = dep.split(".")
            for k in range(2, len(parts) + 1):  # a module imports its packages too
                name = ".".join(parts[:k])
                if name not in seen:
                    seen.add(name)
                    via[name] = mod
                    todo.append(name)
    assert "host.training" not in seen, f"host.training is reached via {via.get('host.training')}"
    assert "host.models" in seen  # the walk is real: generation does load the model bundle
