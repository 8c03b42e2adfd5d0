"""NumVQA task space, MNIST carried in the package, and the balanced sampler."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from host.cli import main
from host.data.mnist import MNIST_DIR, load_mnist
from host.errors import ArtifactError, ConfigError
from host.tasks import get_family, load_space, space_from_dict


@pytest.fixture(scope="module")
def space():
    return load_space("numvqa")


@pytest.fixture(scope="module")
def test_sampler(space):
    return get_family(space.family).make_sampler(space, "test")


def test_mnist_carried_and_verified(tmp_path):
    test = load_mnist("test")
    assert test.images.shape == (10000, 28, 28) and test.images.dtype == torch.uint8
    assert torch.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # An altered copy is refused with a clear error.
    for f in MNIST_DIR.glob("t10k-*.gz"):
        shutil.copy(f, tmp_path / f.name)
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="sha256"):
        load_mnist("test", root=tmp_path)
    with pytest.raises(ConfigError, match="unknown MNIST split"):
        load_mnist("validation")


def test_space_has_about_60_questions_with_unseen_held_out(space):
    seen, unseen, extra = space.names("seen"), space.names("unseen"), space.names("extra")
    assert 50 <= len(seen) + len(unseen) <= 70
    assert "exactly two 0" in unseen and "exactly one 0" in seen and "exactly three 0" in seen
    assert not set(unseen) & set(extra) and not set(unseen) & set(seen)
    trained_attrs = {a for t in space.tasks if t.split != "unseen" for a in t.attributes}
    for name in unseen:
        assert set(space.task(name).attributes) <= trained_attrs


def test_encoding_is_multi_hot(space):
    enc = space.encode(["exactly two 0", "at least one 7"])
    assert enc.shape == (2, space.vocab_size)
    assert enc.sum(dim=1).tolist() == [3.0, 3.0]
    vocab = space.vocabulary
    assert {vocab[i] for i in enc[0].nonzero().flatten().tolist()} == {"exactly", "two", "0"}


def test_compose_and_unknown_names_suggest(space):
    assert space.task("two+exactly+0").name == "exactly two 0"
    t = space.task("exactly+four+7")
    assert t.name == "exactly four 7"
    with pytest.raises(ConfigError, match="Did you mean 'exactly two 0'"):
        space.task("exaclty two 0")
    with pytest.raises(ConfigError, match="unknown attribute 'evn'.*'even'"):
        space.task("exactly+two+evn")
    with pytest.raises(ConfigError, match="two values for group"):
        space.task("exactly+two+three+0")
    with pytest.raises(ConfigError, match="unknown task space"):
        load_space("numvqq")


def test_labels_balanced_correct_and_deterministic(space, test_sampler):
    ids = torch.arange(len(space.tasks))
    a = test_sampler.balanced(ids, 20, seed=3)
    b = test_sampler.balanced(ids, 20, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.shape == (len(space.tasks) * 20, 1, 56, 56)
    assert a.images.min() >= 0.0 and a.images.max() <= 1.0
    # Labels agree with an independent evaluation of every question on the drawn digits.
    assert torch.equal(test_sampler.labels_for(a.task_ids, a.digits), a.labels)
    per_task_yes = torch.zeros(len(space.tasks)).index_add_(0, a.task_ids, a.labels.float())
    assert torch.all(per_task_yes == 10)
    # The images really show the digits: each 28x28 cell is an MNIST test image of that digit.
    mnist = load_mnist("test")
    cell = a.images[0, 0, :28, 28:] * 255
    match = (mnist.images.float() == cell.round()).flatten(1).all(dim=1).nonzero().flatten()
    assert len(match) >= 1 and mnist.labels[match[0]] == a.digits[0, 1]


def test_no_answers_differ_in_what_is_asked(space, test_sampler):
    tid = space.names().index("exactly two 0")
    ids = torch.full((4000,), tid)
    gen = torch.Generator().manual_seed(0)
    batch = test_sampler.draw(ids, torch.zeros(4000, dtype=torch.bool), gen)
    zeros = (batch.digits == 0).sum(dim=1)
    hist = torch.bincount(zeros, minlength=5).float() / 4000
    assert hist[2] == 0
    # one or three 0s (next to the "yes" count) are likelier than none or four
    assert hist[1] > 0.3 and hist[3] > 0.3 and hist[0] > 0.05


def test_space_file_errors():
    base = {
        "name": "x", "family": "digit_grid_count",
        "groups": {"quantifier": ["exactly"], "number": ["one"], "class": ["0"]},
        "grid": {"rows": 2, "cols": 2}, "numbers": {"one": 1}, "classes": {"0": [0]},
        "tasks": [{"quantifier": ["exactly"], "number": ["one"], "class": ["0"]}],
    }
    assert space_from_dict(base).names("seen") == ["exactly one 0"]
    with pytest.raises(ConfigError, match="not an attribute of group 'class'"):
        space_from_dict({**base, "tasks": [{"quantifier": ["exactly"], "number": ["one"], "class": ["1"]}]})
    with pytest.raises(ConfigError, match="unseen task 'exactly one 1'"):
        space_from_dict({**base, "split": {"unseen": ["exactly one 1"]}})
    with pytest.raises(ConfigError, match="unknown task family"):
        space_from_dict({**base, "family": "digits"})


def test_cli_tasks_json(capsys):
    assert main(["tasks", "--space", "numvqa", "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(data) == {"seen", "unseen"} and "exactly two 0" in data["unseen"]
    assert main(["tasks", "--space", "numvq", "--json"]) == 2
    assert "Did you mean 'numvqa'" in capsys.readouterr().err


def test_unseen_tasks_are_truly_unseen(space):
    """No held-out question answers like a trained one on every 2x2 grid (all 10**4 are labelled)."""
    from host.tasks import equivalent_tasks

    pairs = equivalent_tasks(space)
    unseen = set(space.names("unseen"))
    assert ("exactly two even", "exactly two odd") in pairs  # why "exactly two even" is trained, not held out
    assert not [p for p in pairs if unseen & set(p)]
    # "at least four X" is a question users ask: trained (as an extra combination), not skipped
    assert space.task("at least four 7").split == "extra"


def test_space_with_a_leaking_unseen_task_is_refused():
    data = _numvqa_dict()
    data["split"]["unseen"] = ["exactly two 0", "exactly two even"]
    with pytest.raises(ConfigError, match="'exactly two even' is not unseen.*'exactly two odd'"):
        space_from_dict(data)
    # an extra combination that equals an unseen task is left out of training instead
    data["split"]["unseen"] = ["exactly three odd"]
    data["tasks"] = [t for t in data["tasks"] if "even" not in t["class"]] + [
        {"quantifier": ["exactly"], "number": ["three"], "class": ["odd"]}]
    sp = space_from_dict(data)
    assert "exactly one even" not in sp.names()  # equals "exactly three odd" on four cells
    assert "exactly two even" in sp.names("extra")


def _numvqa_dict() -> dict:
    import tomllib

    from host.tasks import SPACES_DIR

    return tomllib.loads((SPACES_DIR / "numvqa.toml").read_text())


def test_checkpoint_loads_across_definitions_that_only_move_unseen_to_trained(tmp_path):
    from host.checkpoint import read_checkpoint, shipped_checkpoint
    from host.errors import SpecError
    from host.models import check_compatible

    ckpt = read_checkpoint(shipped_checkpoint("numvqa"))
    trained = {tuple(t["attributes"]) for t in ckpt.meta["space"]["definition"]["tasks"] if t["split"] != "unseen"}
    data = _numvqa_dict()
    sp = space_from_dict(data)
    check_compatible(ckpt, sp, "resnet_numvqa")  # same attributes, unseen tasks never trained: fine
    if sp.fingerprint() != ckpt.meta["space"]["fingerprint"]:  # resuming a run needs the very definition
        with pytest.raises(SpecError, match="different definition"):
            check_compatible(ckpt, sp, "resnet_numvqa", exact=True)
    # holding out a task the checkpoint trained on is refused: results on it would not be unseen
    leaked = next(t for t in sp.tasks if t.split == "seen" and t.attributes in trained)
    data["split"]["unseen"] = [*data["split"]["unseen"], leaked.name]
    with pytest.raises(SpecError, match=f"trained on '{leaked.name}'"):
        check_compatible(ckpt, space_from_dict(data), "resnet_numvqa")
    # another vocabulary is refused
    data = _numvqa_dict()
    data["groups"]["class"] = [*data["groups"]["class"], "small"]
    data["classes"]["small"] = [0, 1, 2]
    with pytest.raises(SpecError, match="groups differ"):
        check_compatible(ckpt, space_from_dict(data), "resnet_numvqa")


def test_generation_warns_when_no_gated_module_is_left():
    from host.errors import GenerationWarning
    from host.generate import ModelFactory

    f = ModelFactory.load(space="numvqa")
    with pytest.warns(GenerationWarning, match="none of the 480 gated modules"):
        _, summary = f.generate("exactly two 0", 0.001)
    assert summary["activation_ratio"] == 0.0 and len(summary["warnings"]) == 1
    with pytest.warns(GenerationWarning, match="below the lowest limit the generator was trained for"):
        f.generate("exactly two 0", 0.02)
    _, summary = f.generate("exactly two 0", 0.3)  # warnings are errors in tests: none here
    assert summary["warnings"] == []
