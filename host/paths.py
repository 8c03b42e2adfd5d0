"""Where NN-Factory keeps user files when a command is not told where (XDG base directories).

=========================  ===============================================  =======================================
what                       default (first that applies)                     override
=========================  ===============================================  =======================================
device inventory           ``./devices.toml`` if it exists, else            ``--inventory``, ``$NNF_INVENTORY``
                           ``$XDG_CONFIG_HOME/nn-factory/devices.toml``
campaign stores            ``$XDG_DATA_HOME/nn-factory/campaigns/``         ``--campaigns-dir``/``--store``,
                                                                            ``$NNF_CAMPAIGNS_DIR``
fitted device profiles     written to ``$XDG_DATA_HOME/nn-factory/          ``--profiles-dir``, ``$NNF_PROFILES_DIR``
                           device_profiles/``; read from there, then from
                           the profiles shipped with NN-Factory
generated models, exports  the ``--out`` the command is given               ``--out``
=========================  ===============================================  =======================================

``$XDG_CONFIG_HOME`` defaults to ``~/.config`` and ``$XDG_DATA_HOME`` to ``~/.local/share``. Nothing is
written into the source tree unless a command is pointed there. Every command that writes says where.
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "nn-factory"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var, "")
    # the XDG spec: relative paths are invalid and must be ignored
    return Path(value) if value and Path(value).is_absolute() else Path.home() / fallback


def user_config_dir() -> Path:
    """``$XDG_CONFIG_HOME/nn-factory`` (default ``~/.config/nn-factory``)."""
    return _xdg("XDG_CONFIG_HOME", ".config") / APP


def user_data_dir() -> Path:
    """``$XDG_DATA_HOME/nn-factory`` (default ``~/.local/share/nn-factory``)."""
    return _xdg("XDG_DATA_HOME", ".local/share") / APP


def shipped_profiles_dir() -> Path:
    """The device profiles that ship with NN-Factory (the repository's ``device_profiles/``)."""
    return Path(__file__).resolve().parents[1] / "device_profiles"


__all__ = ["APP", "shipped_profiles_dir", "user_config_dir", "user_data_dir"]
