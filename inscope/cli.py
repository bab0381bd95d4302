"""The ``inscope`` command line.

Subcommands live beside the code they drive; each module below exposes
``register(subparsers)`` that adds its commands with ``set_defaults(func=...)``, where
``func(args) -> int`` is the exit code. Registration must stay cheap (no torch, no ONNX
session), so ``inscope --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

log = logging.getLogger("inscope")

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


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option that keeps working: it stores into the new option's
    ``dest`` and logs one line naming the new spelling. Hidden from ``--help`` so each
    meaning shows one name (see :func:`deprecated_alias`)."""

    def __init__(self, option_strings, dest, *, new: str, **kw) -> None:
        self.new = new
        kw["help"] = argparse.SUPPRESS
        kw["default"] = argparse.SUPPRESS  # never overrides the new option's default
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        log.warning("%s is deprecated; use %s (same meaning). The old spelling will be "
                    "removed in a later release.", option_string, self.new)
        setattr(namespace, self.dest, values)


def deprecated_alias(parser, old: str, new: argparse.Action) -> argparse.Action:
    """Accept *old* as a hidden, deprecated spelling of the option *new* (the action
    ``add_argument`` returned): same dest, type, nargs and metavar; using it logs a line."""
    return parser.add_argument(old, dest=new.dest, type=new.type, nargs=new.nargs,
                               metavar=new.metavar, action=DeprecatedAlias,
                               new=new.option_strings[0])


def add_micromanager_arguments(p, *, old_config_flag: bool = True) -> None:
    """``--mm-config`` and ``--mm-dir``: the Micro-Manager configuration and install, one
    definition for every subcommand that can open a headless Micro-Manager core (backend
    options ``mm_config`` and ``mm_dir``). *old_config_flag* keeps ``--config`` as the
    deprecated alias of ``--mm-config`` (not in ``run``, whose ``--config`` is the TOML)."""
    a = p.add_argument("--mm-config", default=None, metavar="CFG",
                       help="headless: Micro-Manager .cfg (absolute or in --mm-dir; default "
                            "MMConfig_demo.cfg)")
    if old_config_flag:
        deprecated_alias(p, "--config", a)
    p.add_argument("--mm-dir", default=None,
                   help="headless: Micro-Manager install or adapter folder (default: "
                        "mm-test-adapters)")


def add_exposure_argument(p, *, default: float | None = None, what: str = "",
                          old_flag: bool = True) -> None:
    """``--exposure-ms``: the camera exposure (backend option ``exposure_ms``);
    *old_flag* keeps ``--exposure`` as its deprecated alias."""
    shown = "the camera's" if default is None else f"{default:g}"
    a = p.add_argument("--exposure-ms", type=float, default=default,
                       help=f"camera exposure in ms{what} (default: {shown})")
    if old_flag:
        deprecated_alias(p, "--exposure", a)


def setup_logging(args: argparse.Namespace) -> None:
    """Show inscope's log on stderr, as ``LEVEL name: message``: its one-line notices at
    INFO (no display, a fallback, frames resized for the detector, which channel of a
    file a slide shows), everything at INFO with ``--verbose``, other libraries'
    warnings otherwise. Every subcommand gets it (:func:`main`), so a notice a part logs
    is seen whichever command drove that part."""
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        logging.getLogger("inscope").setLevel(logging.INFO)


class _Parser(argparse.ArgumentParser):
    """The ``inscope`` parser; :attr:`commands` keeps each subcommand's parser, whose
    usage an error about that subcommand's arguments shows."""

    commands: dict[str, argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    from inscope import __version__

    parser = _Parser(
        prog="inscope",
        description="Microscope-inline real-time cell detection: frames from Micro-Manager "
        "(or a simulated microscope), boxes in milliseconds, stage and focus steered, "
        "an AR overlay.",
    )
    parser.add_argument("--version", action="version", version=f"inscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add = sub.add_parser
    parser.commands = {}

    def add_parser(name, *a, **kw):  # every subcommand's --help shows its defaults
        kw.setdefault("formatter_class", DefaultsHelpFormatter)
        parser.commands[name] = p = add(name, *a, **kw)
        return p

    sub.add_parser = add_parser  # type: ignore[method-assign]
    for mod_name in COMMAND_MODULES:
        importlib.import_module(mod_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # shown with the subcommand's usage (argparse shows the top-level one)
        cmd = getattr(parser, "commands", {}).get(getattr(args, "command", None), parser)
        cmd.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
