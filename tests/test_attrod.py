"""AttrOD task space: the task grammar, truly unseen tasks, and the generated scenes (boxes, colours,
categories, determinism)."""

from __future__ import annotations

import copy
import json
import tomllib

import pytest
import torch

from host.cli import main
from host.data.mnist import load_mnist
from host.errors import ConfigError
from host.tasks import SPACES_DIR, equivalent_tasks, get_family, load_space, space_from_dict
from host.tasks.attrod import VAL_START, same_labels, task_sample_counts


@pytest.fixture(scope="module")
def space():
    return load_space("attrod")


@pytest.fixture(scope="module")
def test_sampler(space):
    return get_family(space.family).make_sampler(space, "test")


@pytest.fixture(scope="module")
def sample(space, test_sampler):
    """48 scenes with opacity maps: half generic, half drawn for tasks (positives and hard negatives)."""
    tids = torch.tensor([-1] * 24 + list(range(0, 24 * 5, 5)))
    return test_sampler.scenes(tids, torch.arange(48), with_alpha=True)


def _raw():
    return tomllib.loads((SPACES_DIR / "attrod.toml").read_text())


def test_space_has_about_140_tasks_in_every_form(space):
    seen, unseen = space.names("seen"), space.names("unseen")
    assert len(space.tasks) == 138 and len(unseen) == 14 and len(seen) == 124
    assert space.vocabulary == ("1", "3", "7", "9", "white", "bronze", "charcoal", "crimson", "lime")
    for name in ("crimson 3", "any-colour 9", "bronze any-digit", "any-colour any-digit", "white/lime 1/7",
                 "crimson 1/3/9"):
        assert name in seen, name
    assert {"bronze 9", "any-colour 7", "crimson any-digit", "white/crimson 1/3"} <= set(unseen)
    # every (category, colour) pair and every attribute of an unseen task is trained in some seen task
    fam = get_family(space.family)
    trained = torch.stack([fam.pair_mask(space, space.task(n)) for n in seen]).any(dim=0)
    assert trained.all()


def test_encoding_composes_categories_and_colours(space):
    enc = space.encode(["white/lime 1/7", "any-colour 9"])
    v = space.vocabulary
    assert [v[i] for i in torch.nonzero(enc[0]).flatten()] == ["1", "7", "white", "lime"]
    assert [v[i] for i in torch.nonzero(enc[1]).flatten()] == ["9", "white", "bronze", "charcoal", "crimson", "lime"]
    encs = space.encode(space.tasks)
    assert len({tuple(r.tolist()) for r in encs}) == len(space.tasks)  # no two tasks share an encoding


def test_compose_and_bad_names(space):
    assert space.task("crimson+lime+3").name == "crimson/lime 3"
    assert space.task("3+lime+crimson").split == "seen"
    assert space.task("bronze+9").split == "unseen"
    composed = space.task("bronze+charcoal+crimson+1+9")  # a product not in the space file
    assert composed.split == "composed" and composed.name == "bronze/charcoal/crimson 1/9"
    with pytest.raises(ConfigError, match="at least one category"):
        space.task("crimson+lime")
    with pytest.raises(ConfigError, match="repeat"):
        space.task("crimson+crimson+3")
    with pytest.raises(ConfigError, match="crimson"):
        space.task("crimsom+3")


def test_unseen_tasks_are_truly_unseen(space, test_sampler):
    """Label a sample of scenes with every unseen and every trained task: no unseen task may label
    all objects exactly as a trained one does (then it would be a seen task under another name)."""
    tids = torch.tensor([-1] * 80 + [i for i, t in enumerate(space.tasks) if t.split == "unseen"] * 4)
    scenes = test_sampler.scenes(tids, torch.arange(len(tids)) + 500)
    trained = [t for t in space.tasks if t.split in ("seen", "extra")]
    for u in (t for t in space.tasks if t.split == "unseen"):
        clashes = [t.name for t in trained if same_labels(space, u, t, scenes)]
        assert not clashes, f"unseen {u.name!r} labels the sample exactly as {clashes}"
    # the check can fail: a task is equivalent to itself
    assert same_labels(space, space.tasks[0], space.tasks[0], scenes)
    # the family's exhaustive labelling (every (category, colour) pair), used when the space is loaded
    assert equivalent_tasks(space) == []


def test_per_task_sample_counts_are_uneven_and_fixed(space):
    counts = task_sample_counts(space)
    assert counts.shape == (len(space.tasks),)
    assert counts.min() >= 200 and counts.max() <= 20000 and counts.max() / counts.min() > 20
    assert torch.equal(counts, task_sample_counts(load_space("attrod")))


def test_boxes_inside_images_and_tight(sample, test_sampler):
    s = test_sampler.size
    b = sample.boxes[sample.valid]  # (M, 4) xywh
    assert len(b) > 48
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
    assert (b[:, 0] + b[:, 2] <= s + 1e-4).all() and (b[:, 1] + b[:, 3] <= s + 1e-4).all()
    assert (b[:, 3] >= test_sampler.scene.min_height - 1e-4).all() and (b[:, 3] <= test_sampler.scene.max_height).all()
    alpha = sample.alpha[sample.valid]  # (M, S, S) each object's own opacity
    ys, xs = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")
    for a, (x, y, w, h) in zip(alpha, b.tolist(), strict=True):
        on = a >= 0.2  # about the crop threshold (64 / 255), blurred by bilinear scaling
        assert on.any()
        # nothing of the glyph outside its box; the glyph reaches every side of the box (tight)
        assert (xs[a > 0] >= x - 1e-4).all() and (xs[a > 0] <= x + w + 1e-4).all()
        assert (ys[a > 0] >= y - 1e-4).all() and (ys[a > 0] <= y + h + 1e-4).all()
        # within 2 px (a glyph pixel is up to 1.5 canvas pixels; pixel centres are 0.5 px in)
        assert abs(xs[on].min() - x) < 2 and abs(xs[on].max() - (x + w)) < 2
        assert abs(ys[on].min() - y) < 2 and abs(ys[on].max() - (y + h)) < 2


def test_colours_and_categories_as_labelled(space, sample, test_sampler):
    rgb = test_sampler.rgb  # (K, 3)
    n = sample.valid.shape[1]
    checked = 0
    for i in range(len(sample)):
        for k in range(n):
            if not sample.valid[i, k]:
                continue
            covered = sample.alpha[i, k + 1 :].amax(dim=0) if k + 1 < n else torch.zeros_like(sample.alpha[i, k])
            visible = (sample.alpha[i, k] > 0.97) & (covered < 0.01)
            if visible.sum() < 4:
                continue
            pixel = sample.images[i][:, visible].median(dim=1).values  # (3,)
            dist = (rgb - pixel[None]).norm(dim=1)
            assert int(dist.argmin()) == int(sample.colour[i, k]), (i, k, pixel, dist)
            checked += 1
    assert checked > 40
    # each object's glyph is an MNIST image of its category's digit, from the split's own images
    labels = load_mnist("test").labels
    digits = torch.tensor([space.params["categories"][c] for c in space.groups["category"]])
    g = sample.glyph[sample.valid]
    assert torch.equal(labels[g], digits[sample.category[sample.valid]])
    assert (sample.category[~sample.valid] == -1).all() and (sample.glyph[~sample.valid] == -1).all()
    val = get_family(space.family).make_sampler(space, "val").scenes(torch.tensor([-1] * 8), torch.arange(8))
    train = get_family(space.family).make_sampler(space, "train").scenes(torch.tensor([-1] * 8), torch.arange(8))
    assert (val.glyph[val.valid] >= VAL_START).all() and (train.glyph[train.valid] < VAL_START).all()


def test_scenes_are_deterministic(space, test_sampler):
    tids, idx = torch.tensor([3, -1, 40, 3]), torch.tensor([7, 7, 0, 8])
    a = test_sampler.scenes(tids, idx)
    b = test_sampler.scenes(tids.flip(0), idx.flip(0))  # another batch composition
    assert torch.equal(a.images, b.images.flip(0)) and torch.equal(a.boxes, b.boxes.flip(0))
    fresh = get_family(space.family).make_sampler(space, "test").scenes(tids, idx)
    assert torch.equal(a.images, fresh.images) and torch.equal(a.category, fresh.category)
    assert not torch.equal(a.images[0], a.images[3])  # another index is another scene
    raw = _raw()
    raw["samples"]["seed"] = 99
    other = get_family(space.family).make_sampler(space_from_dict(raw), "test").scenes(tids, idx)
    assert not torch.equal(a.images, other.images)


def test_task_scenes_hold_positives_and_hard_negatives(space):
    sampler = get_family(space.family).make_sampler(space, "train")
    gen = torch.Generator().manual_seed(0)
    pool = torch.tensor([i for i, t in enumerate(space.tasks) if t.split == "seen"])
    scenes = sampler.draw_train(pool, 200, gen)
    assert set(scenes.task_ids.tolist()) <= set(pool.tolist())
    pos = scenes.positives(sampler.pair_masks[scenes.task_ids])
    assert 0.55 < pos.any(dim=1).float().mean() < 0.95  # most scenes hold a positive, some none
    neg = scenes.valid & ~pos
    assert neg.any(dim=1).float().mean() > 0.4


def test_extra_combinations_are_every_other_product():
    raw = _raw()
    raw["extra_combinations"] = True
    space = space_from_dict(raw)
    extra = space.names("extra")
    assert len(extra) == 15 * 31 - 138  # every (category subset) x (colour subset) not listed
    assert "bronze/charcoal/crimson 1/9" in extra and not set(extra) & set(space.names("unseen"))


def test_space_file_errors():
    raw = _raw()
    bad = copy.deepcopy(raw)
    bad["tasks"][0]["pick"] = {"category": 5}
    with pytest.raises(ConfigError, match="pick"):
        space_from_dict(bad)
    bad = copy.deepcopy(raw)
    bad["colours"]["lime"] = [50, 300, 50]
    with pytest.raises(ConfigError, match="lime"):
        space_from_dict(bad)
    bad = copy.deepcopy(raw)
    bad["tasks"][0]["shape"] = ["round"]
    with pytest.raises(ConfigError, match="shape"):
        space_from_dict(bad)
    bad = copy.deepcopy(raw)
    bad["split"]["unseen"] = ["lime 2"]
    with pytest.raises(ConfigError, match="lime 2"):
        space_from_dict(bad)
    bad = copy.deepcopy(raw)
    bad["scene"]["max_objects"] = 0
    with pytest.raises(ConfigError, match="max_objects"):
        space_from_dict(bad)


def test_cli_tasks_json(capsys):
    assert main(["tasks", "--space", "attrod", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["seen"]) == 124 and "bronze 9" in data["unseen"]
