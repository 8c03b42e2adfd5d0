"""The docs tell the truth: every Python snippet of README.md and docs/*.md runs, and nothing points outside
the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Snippets that need a peer the test cannot provide here, by (file, ordinal of its ```python block).
NOT_RUN: dict[tuple[str, int], str] = {
    ("docs/agent.md", 0): "talks to a running agent at 127.0.0.1:PORT (the agent tests cover the client)",
    ("docs/deploy.md", 0): "needs a 'jetson' device in devices.toml (the deploy tests cover sessions)",
}
#: Snippets that are correct but slow (a TFLite conversion): run with the slow tier.
SLOW: set[tuple[str, int]] = {("docs/exports.md", 0)}


def _setup_exports(tmp: Path) -> None:
    """What docs/exports.md's snippet assumes: the model the page's `nnf generate` wrote."""
    from host.generate import ModelFactory

    ModelFactory.load(space="numvqa").generate("at least two even", 0.3, out_dir=tmp / "models" / "two-even")


SETUP = {("docs/exports.md", 0): _setup_exports}
#: Tiny configs for the test: the same code on a small backbone.
TINY = {("README.md", 0): {'build_supernet("resnet18")': 'build_supernet("resnet_tiny")'}}


def _snippets() -> list:
    out = []
    for path in DOCS:
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        for i, m in enumerate(re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)):
            line = text[: m.start()].count("\n") + 2
            key = (rel, i)
            marks = [pytest.mark.slow] if key in SLOW else []
            if key in NOT_RUN:
                marks.append(pytest.mark.skip(reason=NOT_RUN[key]))
            out.append(pytest.param(rel, i, line, m.group(1), marks=marks, id=f"{rel}:{line}"))
    return out


@pytest.mark.parametrize(("rel", "index", "line", "code"), _snippets())
def test_snippet_runs(rel: str, index: int, line: int, code: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    if (rel, index) in SETUP:
        SETUP[(rel, index)](tmp_path)
    for old, new in TINY.get((rel, index), {}).items():
        assert old in code, f"{rel}:{line} no longer says {old!r}; update TINY"
        code = code.replace(old, new)
    # a snippet may end in a bare expression (shown for its value): compile as a module, run top to bottom
    exec(compile(code, f"{rel}:{line}", "exec"), {"__name__": "__snippet__"})


def test_every_snippet_is_known() -> None:
    keys = {(p.values[0], p.values[1]) for p in _snippets()}
    assert set(NOT_RUN) <= keys and keys >= SLOW and set(SETUP) <= keys and set(TINY) <= keys


def test_nothing_points_outside_the_repository() -> None:
    bad = re.compile(r"\.\./shared|/work/shared|\bDESIGN\.md|\bMEASURED\.md")
    files = [*DOCS, *ROOT.glob("*.md"), *ROOT.glob("host/**/*.py"), *ROOT.glob("agent/**/*.py"),
             *ROOT.glob("benchmarks/*.py"), *ROOT.glob("scripts/*"), *ROOT.glob("tests/**/*.py")]
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in set(files) if p.is_file() and p.name != "test_docs.py"
            for n, text in enumerate(p.read_text(errors="replace").splitlines(), 1) if bad.search(text)]
    assert not hits, hits
