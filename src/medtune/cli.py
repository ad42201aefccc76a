"""The `medtune` command.

medtune params [OVERRIDE ...]   compose conf/ into params.yaml (what `dvc exp run` does by itself), e.g.
                                medtune params model=tiny-random train.epochs=1
"""

from __future__ import annotations

import argparse

from medtune.config import compose_params
from medtune.console import log, run_main


def main() -> None:
    run_main(_dispatch)


def _dispatch() -> None:
    parser = argparse.ArgumentParser(
        prog="medtune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    params = commands.add_parser("params", help="regenerate params.yaml from conf/ (Hydra), with optional overrides")
    params.add_argument("overrides", nargs="*", help="Hydra overrides such as model=tiny-random or peft.r=16")
    params.add_argument("--root", default=".", help="project root holding conf/ (default: current directory)")
    args = parser.parse_args()

    if args.command == "params":
        out = compose_params(args.root, args.overrides)
        log.info("Wrote %s from conf/%s", out, f" with {' '.join(args.overrides)}" if args.overrides else "")
