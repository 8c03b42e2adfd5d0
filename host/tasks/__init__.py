"""Compositional task spaces: an attribute vocabulary, tasks built from it, and their labelling.

A task is a set of attributes (by default one per attribute *group*), e.g. ``{"exactly", "two", "0"}``
named "exactly two 0"; a family may take several per group (AttrOD: a set of categories and a set of
colours, see :mod:`host.tasks.attrod`). The assembler sees a task only as a multi-hot vector over the whole vocabulary, so a
combination never trained on ("unseen") still has an encoding built from attributes it has seen.

Spaces are declared in TOML files (``host/tasks/<name>.toml`` ships with the package; any other file
can be given by path). The file names a *family*, a registered piece of code that knows how to draw
labelled samples for any task of the space (see :data:`FAMILIES`); declaring a new space in an
existing family needs no code at all. Tasks come in three splits:

- ``seen``: listed tasks trained on;
- ``unseen``: listed tasks held out of training, for measuring generalisation;
- ``extra``: the remaining valid combinations of the grammar (when ``extra_combinations = true``),
  trained on as a supplement; never one of the unseen tasks.

An unseen task must be *truly* unseen: no trained task (seen or extra) may give the same answers on
every sample. The family labels a sample of inputs with every task (:meth:`Family.label_sample`), and
a space whose unseen task is equivalent to a trained one is refused when it is loaded; an extra
combination equivalent to an unseen task is left out of training instead.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from host.errors import ConfigError, suggest

SPACES_DIR = Path(__file__).parent
SPLITS = ("seen", "unseen", "extra")


@dataclass(frozen=True)
class Task:
    """One task: a readable name, its attributes (one per group, in group order) and its split."""

    name: str
    attributes: tuple[str, ...]
    split: str


@dataclass(frozen=True)
class TaskSpace:
    """An attribute vocabulary, its tasks and the family that labels them.

    groups: ordered mapping group name -> attribute names; the vocabulary is their concatenation.
    params: the family's own settings from the TOML file (grid, classes, numbers, ...).
    """

    name: str
    description: str
    family: str
    groups: dict[str, tuple[str, ...]]
    tasks: tuple[Task, ...]
    name_format: str
    params: dict[str, Any] = field(default_factory=dict)

    # ---- vocabulary ---------------------------------------------------------------------------
    @property
    def vocabulary(self) -> tuple[str, ...]:
        return tuple(a for attrs in self.groups.values() for a in attrs)

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def attribute_index(self, attribute: str) -> int:
        vocab = self.vocabulary
        if attribute not in vocab:
            raise ConfigError(
                f"unknown attribute {attribute!r} in task space {self.name!r}.{suggest(attribute, vocab)} "
                f"Attributes: {', '.join(vocab)}"
            )
        return vocab.index(attribute)

    # ---- tasks --------------------------------------------------------------------------------
    def names(self, split: str | None = None) -> list[str]:
        if split is not None and split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return [t.name for t in self.tasks if split is None or t.split == split]

    def task(self, name: str) -> Task:
        """Look a task up by name, or build one from attributes written ``"a+b+c"``."""
        for t in self.tasks:
            if t.name == name:
                return t
        if "+" in name:
            return self.compose([p.strip() for p in name.split("+")])
        listed = self.names("seen") + self.names("unseen")
        raise ConfigError(
            f"unknown task {name!r} in task space {self.name!r}.{suggest(name, self.names())} "
            f"List the tasks with `nnf tasks --space {self.name}`, or compose one from attributes as "
            f"'{'+'.join(g[0] for g in self.groups.values())}'. Some tasks: {', '.join(listed[:6])}, ..."
        )

    def compose(self, attributes: Sequence[str]) -> Task:
        """The task made of ``attributes`` (any order); its listed split if it has one.

        By default a task takes exactly one attribute per group; a family may allow more (see
        :meth:`Family.compose`)."""
        for attr in attributes:
            self.attribute_index(attr)  # raises with suggestions
        family = get_family(self.family)
        attrs = family.compose(self, attributes)
        for t in self.tasks:
            if t.attributes == attrs:
                return t
        family.validate_task(self, attrs)
        return Task(name=family.task_name(self, attrs), attributes=attrs, split="composed")

    def encode(self, tasks: Iterable[Task | str]) -> torch.Tensor:
        """Multi-hot encodings, shape (N, vocab_size)."""
        rows = []
        for t in tasks:
            task = self.task(t) if isinstance(t, str) else t
            v = torch.zeros(self.vocab_size)
            for a in task.attributes:
                v[self.attribute_index(a)] = 1.0
            rows.append(v)
        if not rows:
            return torch.zeros(0, self.vocab_size)
        return torch.stack(rows)

    # ---- identity -----------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "family": self.family,
            "groups": {g: list(a) for g, a in self.groups.items()},
            "tasks": [{"name": t.name, "attributes": list(t.attributes), "split": t.split} for t in self.tasks],
            "name_format": self.name_format,
            "params": self.params,
        }

    def fingerprint(self) -> str:
        """sha256 over the canonical JSON: a checkpoint is only valid for the space it was trained on."""
        blob = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


# ---- families ---------------------------------------------------------------------------------


class Family:
    """Code that labels the tasks of one kind of space. Subclasses implement the labelling hooks;
    the task-grammar hooks (:meth:`expand_block`, :meth:`task_name`, :meth:`compose`,
    :meth:`combinations`) default to "one attribute per group" and the training hook
    (:meth:`objective`) to the built-in yes/no objective of :mod:`host.training`."""

    name: str = ""
    #: keys a ``[[tasks]]`` block may hold besides the group names
    block_keys: tuple[str, ...] = ()

    def check_params(self, space_name: str, groups: dict[str, tuple[str, ...]], params: dict) -> None:
        raise NotImplementedError

    def validate_task(self, space: TaskSpace, attributes: tuple[str, ...]) -> None:
        """Raise ConfigError if the attribute combination is not a meaningful task."""
        raise NotImplementedError

    def label_sample(self, space: TaskSpace, attributes: Sequence[tuple[str, ...]]) -> torch.Tensor:
        """Ground truth of each task (given by its attributes) on a fixed sample of inputs.

        Returns a (len(attributes), N) tensor; two tasks whose rows are equal are equivalent on every
        input of the sample. The sample must reach every answer a task can give (exhaustive where the
        input space is small enough), and it must be a pure function of ``space``.
        """
        raise NotImplementedError

    def image_shape(self, space: TaskSpace) -> tuple[int, ...]:
        """Shape (C, H, W) of one input sample."""
        raise NotImplementedError

    def make_sampler(self, space: TaskSpace, split: str, *, augment: bool = False) -> Any:
        """A sampler of labelled inputs from ``split``; ``augment``: jitter the inputs (training)."""
        raise NotImplementedError

    # ---- task grammar -------------------------------------------------------------------------
    def expand_block(
        self, space: TaskSpace, values: dict[str, list[str]], block: dict[str, Any], where: str
    ) -> list[tuple[str, ...]]:
        """The tasks one ``[[tasks]]`` block declares: by default the cartesian product of its values."""
        return [tuple(c) for c in itertools.product(*(values[g] for g in space.groups))]

    def task_name(self, space: TaskSpace, attributes: tuple[str, ...]) -> str:
        """Readable name of a task: by default ``name_format`` filled with one attribute per group."""
        return space.name_format.format(**dict(zip(space.groups, attributes, strict=True)))

    def compose(self, space: TaskSpace, attributes: Sequence[str]) -> tuple[str, ...]:
        """Canonical attribute tuple of the task ``attributes`` (known attributes, any order) describe."""
        by_group: dict[str, str] = {}
        for attr in attributes:
            group = next(g for g, attrs in space.groups.items() if attr in attrs)
            if group in by_group:
                raise ConfigError(
                    f"task attributes {list(attributes)} give two values for group {group!r} "
                    f"({by_group[group]!r} and {attr!r}); give exactly one attribute per group"
                )
            by_group[group] = attr
        missing = [g for g in space.groups if g not in by_group]
        if missing:
            raise ConfigError(
                f"task attributes {list(attributes)} lack a value for group(s) {missing}; "
                f"choose from: " + "; ".join(f"{g}: {', '.join(space.groups[g])}" for g in missing)
            )
        return tuple(by_group[g] for g in space.groups)

    def combinations(self, space: TaskSpace) -> Iterable[tuple[str, ...]]:
        """Every attribute combination of the grammar (candidates for ``extra_combinations``)."""
        return itertools.product(*space.groups.values())

    # ---- training -----------------------------------------------------------------------------
    def objective(self, space: TaskSpace) -> Any:
        """What training optimises for this family (model, samples, losses, validation), or None for
        the built-in yes/no-question objective of :mod:`host.training`."""
        return None


_FAMILIES: dict[str, Callable[[], Family]] = {}


def register_family(name: str, factory: Callable[[], Family]) -> None:
    """Register a labelling family for TOML spaces (``family = "<name>"``)."""
    _FAMILIES[name] = factory


def get_family(name: str) -> Family:
    _register_builtin_families()
    if name not in _FAMILIES:
        raise ConfigError(f"unknown task family {name!r}.{suggest(name, _FAMILIES)} Known: {', '.join(_FAMILIES)}")
    return _FAMILIES[name]()


def _register_builtin_families() -> None:
    if "digit_grid_count" not in _FAMILIES:
        from host.tasks.digit_grid import DigitGridCount

        register_family("digit_grid_count", DigitGridCount)
    if "attributed_scenes" not in _FAMILIES:
        from host.tasks.attrod import AttributedScenes

        register_family("attributed_scenes", AttributedScenes)


# ---- loading ----------------------------------------------------------------------------------


def list_spaces() -> list[str]:
    """Names of the task spaces shipped with the package."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.toml"))


def load_space(name_or_path: str | Path) -> TaskSpace:
    """Load a shipped space by name (``"numvqa"``) or any space file by path."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or path.is_file()):
        path = SPACES_DIR / f"{text}.toml"
        if not path.is_file():
            raise ConfigError(
                f"unknown task space {text!r}.{suggest(text, list_spaces())} "
                f"Shipped spaces: {', '.join(list_spaces())}; or pass a path to a .toml space file"
            )
    if not path.is_file():
        raise ConfigError(f"task space file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"task space file {path} is not valid TOML: {exc}") from exc
    return space_from_dict(data, source=str(path))


def space_from_dict(data: dict, *, source: str = "<dict>") -> TaskSpace:
    """Build and validate a :class:`TaskSpace` from the parsed TOML structure."""

    def need(key: str) -> Any:
        if key not in data:
            raise ConfigError(f"task space {source}: missing top-level key {key!r}")
        return data[key]

    name = str(need("name"))
    family = get_family(str(need("family")))
    raw_groups = need("groups")
    if not isinstance(raw_groups, dict) or not raw_groups:
        raise ConfigError(f"task space {source}: [groups] must map group names to attribute lists")
    groups = {str(g): tuple(str(a) for a in attrs) for g, attrs in raw_groups.items()}
    seen_attrs: set[str] = set()
    for g, attrs in groups.items():
        if not attrs:
            raise ConfigError(f"task space {source}: group {g!r} has no attributes")
        for a in attrs:
            if a in seen_attrs:
                raise ConfigError(f"task space {source}: attribute {a!r} appears in more than one group")
            seen_attrs.add(a)
    name_format = str(data.get("name_format", " ".join("{" + g + "}" for g in groups)))
    reserved = {"name", "description", "family", "groups", "tasks", "split", "name_format", "extra_combinations"}
    params = {k: v for k, v in data.items() if k not in reserved}
    family.check_params(source, groups, params)
    proto = TaskSpace(name, str(data.get("description", "")), family.name, groups, (), name_format, params)

    listed: list[tuple[str, ...]] = []
    for i, block in enumerate(need("tasks")):
        where = f"task space {source}: [[tasks]] #{i + 1}"
        unknown_keys = [k for k in block if k not in groups and k not in family.block_keys]
        if unknown_keys:
            raise ConfigError(
                f"{where} has key(s) {unknown_keys} that are not groups "
                f"({', '.join(groups)}{''.join(', ' + k for k in family.block_keys)})"
            )
        values: dict[str, list[str]] = {}
        for g in groups:
            vals = block.get(g)
            if not vals:
                raise ConfigError(f"{where} lists no values for group {g!r}")
            for v in vals:
                if v not in groups[g]:
                    raise ConfigError(
                        f"{where}: {v!r} is not an attribute of group {g!r}.{suggest(str(v), groups[g])}"
                    )
            values[g] = [str(v) for v in vals]
        for combo in family.expand_block(proto, values, block, where):
            family.validate_task(proto, combo)
            if combo not in listed:
                listed.append(combo)

    def task_name(attrs: tuple[str, ...]) -> str:
        return family.task_name(proto, attrs)

    names = {task_name(a): a for a in listed}
    unseen_names = [str(n) for n in data.get("split", {}).get("unseen", [])]
    for n in unseen_names:
        if n not in names:
            raise ConfigError(
                f"task space {source}: unseen task {n!r} is not among the listed tasks.{suggest(n, names)}"
            )
    tasks = [Task(task_name(a), a, "unseen" if task_name(a) in unseen_names else "seen") for a in listed]
    if data.get("extra_combinations", False):
        for combo in family.combinations(proto):
            if combo in listed:
                continue
            try:
                family.validate_task(proto, combo)
            except ConfigError:
                continue
            tasks.append(Task(task_name(combo), combo, "extra"))
    tasks = _without_leaks(family, proto, tasks, source)
    seen_trained = {a for t in tasks if t.split in ("seen", "extra") for a in t.attributes}
    for t in tasks:
        if t.split == "unseen":
            missing = [a for a in t.attributes if a not in seen_trained]
            if missing:
                raise ConfigError(
                    f"task space {source}: unseen task {t.name!r} uses attribute(s) {missing} that no "
                    "trained task has; its encoding would be meaningless"
                )
    if not any(t.split == "seen" for t in tasks):
        raise ConfigError(f"task space {source}: no seen (trained) tasks")
    return TaskSpace(name, proto.description, family.name, groups, tuple(tasks), name_format, params)


def _without_leaks(family: Family, proto: TaskSpace, tasks: list[Task], source: str) -> list[Task]:
    """Refuse an unseen task that a listed trained task answers identically on every sampled input;
    drop extra combinations that do (they would teach the held-out task under another name)."""
    unseen = [t for t in tasks if t.split == "unseen"]
    if not unseen:
        return tasks
    labels = family.label_sample(proto, [t.attributes for t in tasks])
    rows = {t.attributes: labels[i] for i, t in enumerate(tasks)}
    kept: list[Task] = []
    for t in tasks:
        twins = [u.name for u in unseen if t.split != "unseen" and torch.equal(rows[t.attributes], rows[u.attributes])]
        if twins and t.split == "seen":
            raise ConfigError(
                f"task space {source}: unseen task {twins[0]!r} is not unseen: it gives the same answer as the "
                f"trained task {t.name!r} on every input (labelled on {labels.shape[1]} inputs); move it out of "
                "[split] unseen or hold out a task that no trained task equals"
            )
        if not twins:
            kept.append(t)
    return kept


def equivalent_tasks(space: TaskSpace) -> list[tuple[str, str]]:
    """Pairs (a, b) of listed tasks that answer identically on every sampled input of the space."""
    labels = get_family(space.family).label_sample(space, [t.attributes for t in space.tasks])
    first: dict[bytes, str] = {}
    pairs: list[tuple[str, str]] = []
    for t, row in zip(space.tasks, labels, strict=True):
        key = row.numpy().tobytes()
        if key in first:
            pairs.append((first[key], t.name))
        else:
            first[key] = t.name
    return pairs
