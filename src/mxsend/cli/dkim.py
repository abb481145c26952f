"""``mxsend dkim keygen DOMAIN SELECTOR``: make a DKIM signing key and print its DNS record.

The private key goes to ``--output`` (default ``SELECTOR.DOMAIN.key`` in the current folder:
nothing is written anywhere the user did not look), created with mode 0600 and never over an
existing file or through a symbolic link. The TXT record to publish goes to standard output,
one zone file line, so ``mxsend dkim keygen ... >> zone`` works; the key's path goes to
standard error. Signing itself is :mod:`mxsend.dkim`.
"""

from __future__ import annotations

import argparse
import os
import sys

from mxsend._exits import Exit
from mxsend.cli._common import Parser, Subcommands, UserError

__all__ = ["execute", "setup"]

_EPILOG = """\
key files: RSA as an unencrypted PKCS#8 PEM, ed25519 as the base64 of its 32-octet seed
(dkimpy's format). RSA keys are 2048 bits unless --bits (2048 to 4096, RFC 8301); publish
both an RSA and an ed25519 key under two selectors to sign with both (RFC 8463).
exit status: 0 done, 64 usage (bad domain, selector or size), 73 the key file cannot be
created (it exists, or its folder cannot take it)."""


def setup(commands: Subcommands) -> argparse.ArgumentParser:
    """Add ``dkim`` (with ``keygen``) to the subcommands of the ``mxsend`` parser."""
    parser = commands.add_parser(
        "dkim",
        help="make DKIM signing keys and the DNS records to publish",
        description="DKIM signing keys (RFC 6376): make one and print its DNS TXT record.",
    )
    actions = parser.add_subparsers(dest="dkim_command", required=True, parser_class=Parser)
    keygen = actions.add_parser(
        "keygen",
        help="write a new private key and print the TXT record to publish",
        description="Write a new private key for DOMAIN and SELECTOR (mode 0600, never over\n"
        "an existing file) and print the TXT record to publish at SELECTOR._domainkey.DOMAIN.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keygen.add_argument("domain", metavar="DOMAIN", help="the signing domain (d=)")
    keygen.add_argument("selector", metavar="SELECTOR", help="the selector (s=), e.g. 2026a")
    keygen.add_argument(
        "--type",
        dest="key_type",
        choices=["rsa", "ed25519"],
        default="rsa",
        help="rsa-sha256 (default) or ed25519-sha256 (RFC 8463)",
    )
    keygen.add_argument(
        "--output", metavar="FILE", help="where to write the key (SELECTOR.DOMAIN.key)"
    )
    keygen.add_argument("--bits", type=int, metavar="N", help="RSA key size (2048)")
    return parser


def execute(args: argparse.Namespace) -> int:
    """Run ``mxsend dkim ...``; the exit status."""
    # The only action so far; argparse has refused any other.
    return _keygen(args)


def _keygen(args: argparse.Namespace) -> int:
    from mxsend.dkim import NEW_RSA_BITS, DkimParameterError, KeygenError, check_names, keygen

    if args.bits is not None and args.key_type != "rsa":
        raise UserError(Exit.USAGE, "--bits is for RSA keys only")
    try:
        domain, selector = check_names(args.domain, args.selector)
        path = args.output or f"{selector}.{domain}.key"
        record = keygen(domain, selector, args.key_type, path, bits=args.bits or NEW_RSA_BITS)
    except DkimParameterError as exc:
        raise UserError(Exit.USAGE, str(exc)) from None
    except KeygenError as exc:
        raise UserError(Exit.CANTCREAT, str(exc)) from None
    sys.stdout.write(record + "\n")
    sys.stderr.write(f"mxsend: private key written to {os.path.abspath(path)} (mode 0600)\n")
    return int(Exit.OK)
