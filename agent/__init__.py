"""NN-Factory on-device profiling agent (stands alone: never imports ``host``)."""

__version__ = "0.1.0"
