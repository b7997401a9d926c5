"""`bt-protection` command line: one module per sub-command, each with `add_arguments` and `run`.

The library's errors name the parameters of its functions as `name`; the CLI prints them with
the command's flag for each (`--name`), so a sentence reads the same from the library and the
shell.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Mapping, Sequence

from bt_protection.errors import UserError

# sub-command -> (module under bt_protection.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("validate", "Check profiles; exit non-zero if any is invalid."),
    "demo": ("demo", "Print the six decision scenarios of the original system."),
    "fetch": ("fetch", "Download daily prices with yfinance into the local cache."),
    "run": ("run", "Run one strategy under one profile into a run folder."),
    "compare": ("compare", "Run a strategy under several profiles and compare the runs."),
    "systems": ("systems", "List the protection systems, built-in and plugins."),
    "strategies": ("strategies", "List the registered strategy names."),
    "tune": ("tune", "Walk-forward tuning of protection parameters, judged out of sample."),
    "report": ("report", "Write report.html for a run, comparison or tune folder."),
    "paper": ("paper", "Run or resume a strategy on replayed data with a saved paper broker."),
    "state": ("state", "Show or clear a protection_state file (live and paper runs)."),
}


# a library parameter whose flag has another name: `params` is given as --param key=value
PARAMETER_FLAGS = {"params": "--param"}
_PARAMETER = re.compile(r"`([a-z][a-z_]*)`")


class _Parser(argparse.ArgumentParser):
    """argparse that exits with one sentence on bad arguments (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}.\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bt-protection", description="Protection orchestrator for backtrader.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(f"bt_protection.cli.{module}").add_arguments(command)
        command.set_defaults(flags=_flags(command))
    return parser


def _flags(command: argparse.ArgumentParser) -> dict[str, str]:
    """The command's flag for each library parameter: `--regime-data` for `regime_data`."""
    found = {
        action.dest: option
        for action in command._actions
        for option in action.option_strings[::-1]  # the first long option wins
        if option.startswith("--") and not option.startswith("--no-")
    }
    return {**found, **{k: v for k, v in PARAMETER_FLAGS.items() if v in found.values()}}


def as_flags(message: str, flags: Mapping[str, str]) -> str:
    """`message` with each parameter it names (`name`) written as its flag, where it has one."""
    return _PARAMETER.sub(lambda found: flags.get(found.group(1), found.group(0)), message)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(f"bt_protection.cli.{COMMANDS[args.command][0]}")
    try:
        code = int(module.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except UserError as error:
        print(
            f"bt-protection {args.command}: error: {as_flags(str(error), args.flags)}",
            file=sys.stderr,
        )
        return 2
    except BrokenPipeError:  # the reader stopped reading (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        return 1
    except OSError as error:  # the file system refused a path the user gave: no traceback
        where = f"{error.filename}: " if error.filename else ""
        print(
            f"bt-protection {args.command}: error: {where}{error.strerror or error}.",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"bt-protection {args.command}: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
