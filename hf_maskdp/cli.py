"""`hf-maskdp` command line: one subcommand per module in `hf_maskdp/commands/`.

Each command module defines `register(subparsers)` and keeps heavy imports inside its
handler, so `hf-maskdp --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["privacy", "anonymize", "train", "pretrain", "quickstart", "space"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-maskdp",
        description="Avatar anonymization and Masked Differential Privacy for video action recognition.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"hf_maskdp.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 1
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as err:
        # Bad input: one clear line, no traceback.
        print(f"hf-maskdp {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
