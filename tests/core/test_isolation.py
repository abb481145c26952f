"""The pure rooms do no I/O of the network kind: the protocol core (no event loop, socket, TLS
library or clock), the shared model, message preparation, routing decisions and delivery
options (no Twisted, event loop or TLS library), so a queue, a status page, a config file or
a sendmail front end can use them alone."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

import mxsend.message
import mxsend.model
import mxsend.options
import mxsend.protocol
import mxsend.queue
import mxsend.routing

CORE_FORBIDDEN = {"twisted", "asyncio", "socket", "ssl", "time", "select", "selectors", "threading"}
PURE_FORBIDDEN = {"twisted", "asyncio", "ssl", "OpenSSL"}
# Rooms above these, which they must never import.
SHELL = ("mxsend.twisted", "mxsend.cli")

PREPARE = (
    "import tempfile, mxsend.message\n"
    "with tempfile.NamedTemporaryFile() as f:\n"
    "    f.write(b'From: a@x.test\\nTo: b@y.test\\nBcc: c@z.test\\n\\nbody\\n'); f.flush()\n"
    "    p = mxsend.message.prepare(f.name, read_headers=True, remove_bcc=True)\n"
    "    mxsend.message.scan(p.content)\n"
)
QUEUE = (
    "import tempfile, mxsend.queue\n"
    "from mxsend.protocol import Envelope, Message\n"
    "m = Message(Envelope.build('a@x.test', ['b@y.test']), b'Subject: t\\r\\n\\r\\nhi\\r\\n')\n"
    "with tempfile.TemporaryDirectory() as d:\n"
    "    store = mxsend.queue.DiskStore(d)\n"
    "    mxsend.queue.enqueue(store, [m, m])\n"
    "    [c] = store.claim(store.scan()[:1])\n"
)
OPTIONS = (
    "import tomllib, mxsend.options\n"
    "mxsend.options.DeliveryOptions.from_table(tomllib.loads("
    "'helo_name = \"h.test\"\\n[limits]\\nparallel = 2\\n'))\n"
)


@pytest.mark.parametrize(
    ("work", "forbidden"),
    [
        ("import mxsend.protocol, mxsend.protocol._session\n", CORE_FORBIDDEN - {"time"}),
        ("import mxsend.model\n", PURE_FORBIDDEN | {"socket"}),
        (PREPARE, PURE_FORBIDDEN),
        ("import mxsend.routing\n", PURE_FORBIDDEN | {"socket"}),
        (OPTIONS, PURE_FORBIDDEN | {"socket"}),
        (QUEUE, PURE_FORBIDDEN | {"socket"}),
    ],
    ids=["protocol", "model", "message", "routing", "options", "queue"],
)
def test_using_a_pure_room_pulls_in_nothing_forbidden(work: str, forbidden: set[str]) -> None:
    check = f"bad = set({sorted(forbidden)!r}) & set(sys.modules)\nassert not bad, bad\n"
    code = f"import sys\n{work}{check}"
    subprocess.run([sys.executable, "-c", code], check=True)


def _imports(path: pathlib.Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return names


CORE = sorted(pathlib.Path(mxsend.protocol.__file__).parent.glob("*.py"))
PURE = [
    pathlib.Path(mxsend.model.__file__),
    pathlib.Path(mxsend.message.__file__),
    pathlib.Path(mxsend.options.__file__),
    *sorted(pathlib.Path(mxsend.routing.__file__).parent.glob("*.py")),
    *sorted(pathlib.Path(mxsend.queue.__file__).parent.glob("*.py")),
]


@pytest.mark.parametrize("path", CORE + PURE, ids=lambda p: p.name)
def test_pure_sources_import_nothing_forbidden(path: pathlib.Path) -> None:
    forbidden = CORE_FORBIDDEN if path in CORE else PURE_FORBIDDEN
    for name in _imports(path):
        assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
        assert not name.startswith(SHELL), f"{path.name} imports {name}"


def test_send_queue_is_a_lean_path(tmp_path: pathlib.Path) -> None:
    # Queueing a message is file work: no reactor, TLS library or event loop is imported,
    # so a sendmail-style front end built on it starts quickly.
    message = tmp_path / "m.eml"
    message.write_bytes(b"Subject: t\n\nhi\n")
    code = (
        "import sys, mxsend.cli\n"
        f"rc = mxsend.cli.main(['send', '--queue', '--queue-dir', {str(tmp_path / 'q')!r},\n"
        f"    '--from', 'a@b.test', '--to', 'c@d.test', {str(message)!r}])\n"
        "bad = {'twisted', 'OpenSSL', 'asyncio', 'ssl'} & set(sys.modules)\n"
        "assert rc == 0 and not bad, (rc, bad)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
