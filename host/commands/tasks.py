"""``nnf tasks``: list the tasks of a task space (seen = trained, unseen = held out)."""

from __future__ import annotations

import argparse

from host.tasks import list_spaces, load_space


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="list the tasks of a task space", description=__doc__)
    p.add_argument("--space", default="numvqa", help="task space name or .toml path (default: %(default)s); "
                   f"shipped: {', '.join(list_spaces())}")
    p.add_argument("--extra", action="store_true",
                   help="also list the extra attribute combinations trained on as a supplement")
    p.add_argument("--json", action="store_true", help='print {"seen": [...], "unseen": [...]}')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from host.cli import print_json

    space = load_space(args.space)
    splits = ("seen", "unseen", "extra") if args.extra else ("seen", "unseen")
    if args.json:
        print_json({s: space.names(s) for s in splits})
        return 0
    print(f"task space {space.name}: {space.description}")
    print("attributes: " + "; ".join(f"{g}: {', '.join(a)}" for g, a in space.groups.items()))
    for s in splits:
        names = space.names(s)
        print(f"\n{s} ({len(names)}):")
        for t in space.tasks:
            if t.split == s:
                print(f"  {t.name:<24} {' + '.join(t.attributes)}")
    return 0
