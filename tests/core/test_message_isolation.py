"""Message preparation (mxsend.message) is pure: no Twisted, event loop or TLS library, so a
command that only submits (a sendmail front end) can prepare a message without them."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import mxsend.message

FORBIDDEN = {"twisted", "asyncio", "ssl", "OpenSSL"}


def test_preparing_a_message_pulls_in_no_twisted() -> None:
    code = (
        "import sys, tempfile, mxsend.message\n"
        "with tempfile.NamedTemporaryFile() as f:\n"
        "    f.write(b'From: a@x.test\\nTo: b@y.test\\nBcc: c@z.test\\n\\nbody\\n'); f.flush()\n"
        "    p = mxsend.message.prepare(f.name, read_headers=True, strip_bcc=True)\n"
        "    mxsend.message.scan(p.content)\n"
        f"bad = {FORBIDDEN!r} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_message_source_imports_nothing_forbidden() -> None:
    path = pathlib.Path(mxsend.message.__file__)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
            assert not name.startswith(("mxsend.twisted", "mxsend.routing", "mxsend.cli"))
