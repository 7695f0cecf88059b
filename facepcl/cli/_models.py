"""``facepcl models``: the registered models with source and licence."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list known models with their source and licence")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hub import default_model_name
    from ..registry import list_models

    default = default_model_name()
    for m in list_models():
        kind, where = m.location()
        state = "available" if m.available() else ("on the Hub" if kind == "hf-hub" else "not present")
        mark = " (default)" if m.name == default else ""
        print(f"{m.name}{mark}")
        print(f"  source:   {m.source}" + (f" @ {m.revision}" if m.revision else ""))
        print(f"  where:    {where} [{state}]")
        print(f"  licence:  {m.license}")
        if m.description:
            print(f"  about:    {m.description}")
        if m.how_to_get and not m.available():
            print(f"  get it:   {m.how_to_get}")
    return 0
