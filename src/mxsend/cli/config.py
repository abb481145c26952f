"""``mxsend config``: check the config file, or show the settings in effect.

``check`` prints every problem, one ``FILE:LINE: what was expected`` line each, and exits 78
(EX_CONFIG); else ``FILE: ok`` and 0. ``show`` prints the settings in effect (the file's,
and the built-in defaults of the rest, marked) as TOML, or JSON with ``--json``, with every
secret redacted. Neither reads a password file or runs a password command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from mxsend._exits import Exit
from mxsend._queuefiles import COMMIT_INTERVAL
from mxsend.cli._common import Subcommands, config_option

if TYPE_CHECKING:
    from mxsend.config import Config, KeyPath

__all__ = ["builtin_defaults", "execute", "setup"]


def setup(commands: Subcommands) -> argparse.ArgumentParser:
    """Add ``config`` to the subcommands of the ``mxsend`` parser."""
    parser = commands.add_parser(
        "config",
        help="check the config file, or show the settings in effect",
        description="Check the config file (mxsend.toml), or show the settings in effect.",
    )
    actions = parser.add_subparsers(dest="action", required=True, parser_class=type(parser))
    check = actions.add_parser(
        "check",
        help="report every problem as FILE:LINE: ...; exit 78 if there is one",
        description="Check every key of the config file; print each problem as "
        "FILE:LINE: what was expected, and exit 78 if there is one (0: FILE: ok).",
    )
    config_option(check, apply=False)
    show = actions.add_parser(
        "show",
        help="the settings in effect, secrets redacted",
        description="Print the settings in effect: the file's, and the built-in defaults "
        "(marked) for the rest; passwords and password commands are redacted.",
    )
    config_option(show, apply=False)
    show.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return parser


def execute(args: argparse.Namespace) -> int:
    """``mxsend config check`` or ``mxsend config show``."""
    from mxsend.config import (
        SYSTEM_CONFIG,
        ConfigError,
        default_config_path,
        find_config,
        load_config,
    )

    path = find_config(explicit=args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        sys.stderr.write("".join(f"{problem}\n" for problem in exc.problems))
        return int(Exit.CONFIG)
    if args.action == "show":
        _show(config, as_json=args.json)
    elif path is None:
        default = default_config_path()
        other = "" if default == SYSTEM_CONFIG else f" (root's: {SYSTEM_CONFIG})"
        sys.stdout.write(f"no config file at {default}{other}: the built-in defaults apply\n")
    else:
        sys.stdout.write(f"{path}: ok\n")
    return int(Exit.OK)


def builtin_defaults() -> dict[str, Any]:
    """The settings that apply when neither the command line nor the file gives them, as a
    TOML-shaped table (the TLS policy and DNS server have no single value: left out)."""
    from mxsend.cli.send import local_name
    from mxsend.options import STAGES
    from mxsend.queue import RetryPolicy, default_queue_dir, format_duration

    policy = RetryPolicy()
    return {
        "hostname": local_name(),
        "queue_dir": str(default_queue_dir()),
        "log_format": "text",
        "mx_port": 25,
        "chunking": True,
        "allow_cleartext_auth": False,
        "retry": {
            "first": format_duration(policy.first),
            "max": format_duration(policy.maximum),
            "lifetime": format_duration(policy.lifetime),
            "bounce_lifetime": format_duration(policy.bounce_lifetime),
            "delay_warning": "off",
        },
        "timeouts": {stage: seconds for stage, (seconds, _) in STAGES.items()},
        "daemon": {
            "workers": 4,
            "connections": 5,
            "processes": 1,
            "poll": "30s",
            "grace": "30s",
            "commit_interval": format_duration(COMMIT_INTERVAL),
        },
        "sendmail": {"delivery": "background", "undisclosed_recipients": False},
    }


def _paths(table: dict[str, Any], prefix: KeyPath = ()) -> set[KeyPath]:
    out: set[KeyPath] = set()
    for key, value in table.items():
        if isinstance(value, dict):
            out |= _paths(value, (*prefix, key))
        else:
            out.add((*prefix, key))
    return out


def _show(config: Config, *, as_json: bool) -> None:
    from mxsend.config import as_table, dotted, dump_toml, merge

    settings = as_table(config.redacted())
    defaults = builtin_defaults()
    merged = merge(defaults, settings)
    notes = dict.fromkeys(_paths(defaults) - _paths(settings), "default")
    if os.environ.get("MXSEND_QUEUE_DIR"):  # it comes before the file's queue_dir
        merged["queue_dir"] = os.environ["MXSEND_QUEUE_DIR"]
        notes[("queue_dir",)] = "$MXSEND_QUEUE_DIR"
    if as_json:
        defaulted = sorted(dotted(p) for p, note in notes.items() if note == "default")
        document = {"file": config.path, "settings": merged, "defaults": defaulted}
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    source = config.path or "no config file"
    sys.stdout.write(f"# settings in effect: {source}; secrets redacted\n")
    sys.stdout.write(dump_toml(merged, notes=notes))
