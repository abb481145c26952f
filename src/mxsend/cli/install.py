"""``mxsend install-sendmail``: make mxsend the system's sendmail, mailq and newaliases.

Each is a symbolic link to the ``mxsend-sendmail`` script, which acts by the name it is
called by. An existing file is never replaced without ``--force``."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from mxsend._exits import Exit
from mxsend.cli._common import Subcommands, UserError

__all__ = ["LINKS", "execute", "setup"]

#: Where each name goes under the prefix, as Debian's sendmail packages put them.
LINKS = (("sbin", "sendmail"), ("bin", "mailq"), ("bin", "newaliases"))


def setup(commands: Subcommands) -> argparse.ArgumentParser:
    """Add ``install-sendmail`` to the subcommands of the ``mxsend`` parser."""
    parser = commands.add_parser(
        "install-sendmail",
        help="link sendmail, mailq and newaliases to mxsend-sendmail",
        description="Link PREFIX/sbin/sendmail, PREFIX/bin/mailq and PREFIX/bin/newaliases "
        "to the mxsend-sendmail script. An existing file is left alone unless --force.",
    )
    parser.add_argument("--prefix", default="/usr", help="where sbin/ and bin/ are (/usr)")
    parser.add_argument("--force", action="store_true", help="replace files already there")
    return parser


def _script() -> Path:
    beside = Path(sys.executable).parent / "mxsend-sendmail"
    found = beside if beside.exists() else shutil.which("mxsend-sendmail")
    if not found:
        raise UserError(Exit.UNAVAILABLE, "mxsend-sendmail is not installed (pip install mxsend)")
    return Path(found).absolute()


def execute(args: argparse.Namespace) -> int:
    script = _script()
    targets = [Path(args.prefix) / folder / name for folder, name in LINKS]
    # Check them all first: either every link is made or none is.
    taken = [t for t in targets if (t.exists() or t.is_symlink()) and not _links_to(t, script)]
    if taken and not args.force:
        raise UserError(
            Exit.CANTCREAT,
            f"{taken[0]} exists; give --force to replace it (and any other already there)",
        )
    for target in targets:
        if _links_to(target, script):
            sys.stdout.write(f"{target} already links to {script}\n")
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.mxsend")
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(script)
            os.replace(temporary, target)  # atomic: the old one until the new one is there
        except OSError as exc:
            raise UserError(Exit.CANTCREAT, f"cannot link {target}: {exc.strerror}") from None
        sys.stdout.write(f"{target} -> {script}\n")
    return int(Exit.OK)


def _links_to(target: Path, script: Path) -> bool:
    return target.is_symlink() and Path(os.readlink(target)) == script
