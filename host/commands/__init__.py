"""CLI subcommands of ``nnf``: one module per verb, each with ``register(subparsers)``."""
