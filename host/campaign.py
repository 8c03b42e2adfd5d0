"""Transition shim: this module moved to ``host.profiling`` (import from there; this file will be removed)."""

# ruff: noqa: F401, F403
from host.profiling.build import *
from host.profiling.data import *
from host.profiling.measurers import *
from host.profiling.plan import *
from host.profiling.runner import *
from host.profiling.store import *
