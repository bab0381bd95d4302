"""The ``inscope`` command line.

Subcommands live beside the code they drive; each module below exposes
``register(subparsers)`` that adds its commands with ``set_defaults(func=...)``, where
``func(args) -> int`` is the exit code. Registration must stay cheap (no torch, no ONNX
session), so ``inscope --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order here is the order in --help.
COMMAND_MODULES = [
    "inscope.commands",        # demo, run, bench
    "inscope.eyepiece_cli",    # calibrate-eyepiece
    "inscope.acquisition.cli",       # stream
    "inscope.detector.eval_cli",     # eval
    "inscope.detector.train.cli",    # train
    "inscope.control.cli",           # calibrate, scan
    "inscope.detector.triton_cli",   # export-triton
    "inscope.curve",                 # keys
]


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already names its
    default or there is none to name (None, False, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if ("default" in text.lower() or d is None or d is False or d == []
                or d is argparse.SUPPRESS or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    from inscope import __version__

    parser = argparse.ArgumentParser(
        prog="inscope",
        description="Microscope-inline real-time cell detection: frames from Micro-Manager "
        "(or a simulated microscope), boxes in milliseconds, stage and focus steered, "
        "an AR overlay.",
    )
    parser.add_argument("--version", action="version", version=f"inscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add = sub.add_parser

    def add_parser(*a, **kw):  # every subcommand's --help shows its defaults
        kw.setdefault("formatter_class", DefaultsHelpFormatter)
        return add(*a, **kw)

    sub.add_parser = add_parser  # type: ignore[method-assign]
    for mod_name in COMMAND_MODULES:
        importlib.import_module(mod_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
