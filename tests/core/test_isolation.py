"""The protocol core does no I/O: no event loop, socket, TLS library or clock."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import mxsend.protocol

FORBIDDEN = {"twisted", "asyncio", "socket", "ssl", "time", "select", "selectors", "threading"}


def test_import_pulls_in_no_io_module() -> None:
    code = (
        "import sys, mxsend.protocol, mxsend.protocol._session\n"
        "bad = {'twisted', 'asyncio', 'socket', 'ssl', 'selectors'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_core_sources_import_nothing_forbidden() -> None:
    root = pathlib.Path(mxsend.protocol.__file__).parent
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
