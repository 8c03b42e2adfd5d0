"""Transition shim: this module moved to ``host.profiling`` (import from there; this file will be removed)."""

# ruff: noqa: F401, F403
from host.profiling.device_profile import *
