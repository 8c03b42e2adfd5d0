"""Exception hierarchy of the NN-Factory host.

Every error a user can cause derives from :class:`NNFactoryError`, so a caller (or the CLI) can catch
one type. Each message names what is wrong and what to do about it.

    NNFactoryError
    ├── ConfigError            unknown backbone/config/task/device name, bad option values
    ├── GateError              gate vectors of the wrong length/shape, non-binary where hard gates are needed
    ├── SpecError              a model spec/checkpoint that cannot be read (newer version, corrupt, wrong kind)
    ├── ArtifactError          weights files that are truncated or corrupt, export failures
    ├── MissingExtraError      an optional dependency is not installed (says which ``pip install`` fixes it)
    ├── AgentError             talking to an on-device agent failed (see host.client for subclasses)
    ├── DeployError            deploying an agent over ssh/adb failed
    ├── CampaignError          a profiling campaign store is unusable
    └── SearchError            no candidate meets the budgets
        └── DriftError         the device no longer behaves as its profile says (drift check refused)

    NNFactoryWarning (UserWarning)
    └── GenerationWarning      a generated model that will answer poorly (no gated module left, a limit
                               below what the generator was trained for)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class NNFactoryError(Exception):
    """Base class of every error NN-Factory raises on purpose."""


class ConfigError(NNFactoryError, ValueError):
    """An unknown name or an invalid option value."""


class GateError(NNFactoryError, ValueError):
    """Gate vectors that do not fit a gate layout."""


class SpecError(NNFactoryError, ValueError):
    """A spec or checkpoint that cannot be used."""


class ArtifactError(NNFactoryError):
    """A weights file or exported artifact that is missing, truncated or corrupt."""


class MissingExtraError(NNFactoryError, ImportError):
    """An optional dependency is missing."""

    def __init__(self, what: str, extra: str, package: str | None = None) -> None:
        pkg = package or extra
        self.extra = extra
        self.hint = install_command(extra)
        super().__init__(f"{what} needs the optional dependency {pkg!r}, which is not installed; "
                         f"install it with: {self.hint}")


def install_command(extra: str) -> str:
    """The pip command that adds the extra ``extra`` to this installation.

    torch is pinned in the same command (to the installed version): an unpinned torch pulled in by an extra
    would be replaced by a multi-GB CUDA build. From a source clone (an editable install) the command
    installs the clone itself, so it works where ``nn-factory`` is not on a package index.
    """
    import importlib.metadata
    from pathlib import Path

    try:
        torch = f"torch=={importlib.metadata.version('torch').split('+')[0]} "
    except importlib.metadata.PackageNotFoundError:
        torch = ""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file():
        return f"python -m pip install {torch}-e '{root}[{extra}]'"
    return f"python -m pip install {torch}'nn-factory[{extra}]'"


class AgentError(NNFactoryError):
    """Talking to an on-device agent failed."""


class DeployError(NNFactoryError):
    """Deploying, starting or stopping an agent on a device failed."""


class CampaignError(NNFactoryError):
    """A profiling campaign or its store is unusable."""


class SearchError(NNFactoryError):
    """No candidate meets the requested budgets."""


class DriftError(SearchError):
    """The device's reference subnets moved beyond what one rescale factor explains: re-profile or search live."""


class NNFactoryWarning(UserWarning):
    """Base class of NN-Factory's warnings."""


class GenerationWarning(NNFactoryWarning):
    """A request the generator can serve, but whose model will answer poorly."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return a ' Did you mean ...?' hint for ``name`` among ``choices`` ('' when nothing is close)."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
