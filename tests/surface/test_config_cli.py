"""The config file on the command line: ``mxsend config check|show``, ``--config`` on send,
queue, daemon and plan (the file under the options, the options winning), a broken file's
exit 78 with its lines, and routes with per-domain TLS and AUTH steering real deliveries:
the local world's DNS and SMTP servers and an aiosmtpd relay, all on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.trial.unittest import TestCase

from mxsend._testca import TestCA
from mxsend.cli import config as config_command
from mxsend.cli._common import SETTINGS, Parser
from mxsend.protocol import AuthenticationError, Envelope, Message, Status
from mxsend.routing import TLSPolicy
from mxsend.routing._table import Auth, DomainRoute, Rate, Relay, RouteTable
from mxsend.twisted import Deliverer, DeliveryOptions, DNSRouter, Limits, make_resolver
from mxsend.twisted._routes import CredentialsError, OAuthBearer, RouteState, run_command
from tests.conftest import World, free_port, temp_dir

MXSEND = Path(sys.executable).parent / "mxsend"
MESSAGE = b"From: sender@client.test\nSubject: config\n\nhello\n"


def mxsend(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """``python -m mxsend ARGS`` with no config file of the environment's."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MXSEND_")}
    return subprocess.run(
        [sys.executable, "-m", "mxsend", *args], capture_output=True, timeout=120,
        check=False, env={**clean, **(env or {})},
    )  # fmt: skip


def write_config(folder: Path, text: str, name: str = "mxsend.toml") -> Path:
    path = folder / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def lines(stderr: bytes) -> list[str]:
    assert b"Traceback" not in stderr, stderr
    return stderr.decode().strip().splitlines()


@pytest.fixture
def message(tmp_path: Path) -> Path:
    path = tmp_path / "m.eml"
    path.write_bytes(MESSAGE)
    return path


BROKEN = """\
hostname = "client.test"
mx_port = "25"
[retry]
first = "soon"
[routes."beta.test"]
tls = "strict"
[[dkim."client.test"]]
selector = "s1"
key_file = "/no/such/key.pem"
"""
BROKEN_LINES = [2, 4, 6, 9]


# -- mxsend config check / show ---------------------------------------------------------------


def run_config(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``mxsend config ARGV`` in this process, through a parser built with its setup()."""
    parser = Parser(prog="mxsend")
    config_command.setup(parser.add_subparsers(dest="command", required=True, parser_class=Parser))
    status = config_command.execute(parser.parse_args(["config", *argv]))
    out, err = capsys.readouterr()
    return status, out, err


def test_check_names_every_bad_line_and_exits_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, BROKEN)
    status, out, err = run_config(["check", "--config", str(path)], capsys)
    assert status == 78 and out == ""
    found = err.splitlines()
    assert [int(x.split(":")[1]) for x in found] == BROKEN_LINES, err
    assert all(x.startswith(f"{path}:") for x in found)
    assert f"{path}:6: routes.\"beta.test\".tls: expected one of 'none'" in err
    good = write_config(tmp_path, 'hostname = "client.test"\n', "good.toml")
    assert run_config(["check", "--config", str(good)], capsys) == (0, f"{good}: ok\n", "")


def test_check_refuses_what_send_refuses(tmp_path: Path, message: Path) -> None:
    # A DKIM key open to others: check said ok, then send exited 78. Now both say why, on
    # the key's line; so for a password file, and a file nested past reason (it crashed).
    from mxsend.dkim import keygen

    key = tmp_path / "s1.pem"
    keygen("client.test", "s1", "ed25519", key)
    key.chmod(0o644)
    password = tmp_path / "pw"
    password.write_text("secret\n")
    password.chmod(0o666)
    path = write_config(tmp_path, (
        'hostname = "client.test"\n[[dkim."client.test"]]\nselector = "s1"\n'
        f'algorithm = "ed25519"\nkey_file = "{key}"\n'
        '[routes."*"]\nvia = "[127.0.0.1]:9"\n'
        f'auth = {{ username = "u", password_file = "{password}" }}\n'
    ))  # fmt: skip
    want = [f"{path}:5: dkim.\"client.test\"[0].key_file: DKIM key {key}: is open to other "
            "users (mode 0644): chmod o-rwx it",
            f"{path}:8: routes.\"*\".auth.password_file: {password} is open to other users "
            "(mode 0666): chmod o-rwx it"]  # fmt: skip
    check = mxsend("config", "check", "--config", str(path))
    assert (check.returncode, lines(check.stderr)) == (78, want)
    sent = mxsend("send", "--config", str(path), "--to", "b@beta.test", str(message))
    assert (sent.returncode, lines(sent.stderr)) == (78, [f"mxsend: {x}" for x in want])
    key.chmod(0o640)
    password.chmod(0o600)
    assert mxsend("config", "check", "--config", str(path)).returncode == 0
    deep = write_config(tmp_path, "# x\na = " + "[" * 3000 + "]" * 3000 + "\n", "deep.toml")
    check = mxsend("config", "check", "--config", str(deep))
    assert (check.returncode, lines(check.stderr)) == (
        78, [f"{deep}:2: nested more than 32 levels deep"]
    )  # fmt: skip


def test_check_without_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MXSEND_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    status, out, _ = run_config(["check"], capsys)
    assert status == 0 and out.startswith(f"no config file at {tmp_path}/mxsend/mxsend.toml")
    monkeypatch.setenv("MXSEND_CONFIG", str(tmp_path / "absent.toml"))
    status, out, err = run_config(["check"], capsys)
    assert (
        status == 78
        and err == f"{tmp_path / 'absent.toml'}: cannot read: No such file or directory\n"
    )


def test_show_is_toml_with_defaults_marked_and_secrets_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MXSEND_QUEUE_DIR", raising=False)
    path = write_config(tmp_path, (
        'hostname = "client.test"\n[retry]\nfirst = "90s"\n'
        '[routes."*"]\nvia = "[relay.test]:465"\n'
        f'auth = {{ username = "me", password_command = ["{sys.executable}", "-c", '
        '"print(\'hunter2\')"] }\n'
    ))  # fmt: skip
    status, out, _ = run_config(["show", "--config", str(path)], capsys)
    assert status == 0, out
    assert "hunter2" not in out and '"<redacted>"' in out and sys.executable in out
    shown = tomllib.loads(out)
    assert shown["hostname"] == "client.test" and shown["retry"]["first"] == "1m30s"
    assert shown["retry"]["lifetime"] == "5d" and shown["timeouts"]["final"] == 600
    assert shown["routes"]["*"]["via"] == "[relay.test]:465"
    rows = out.splitlines()
    assert 'lifetime = "5d"  # default' in rows and 'first = "1m30s"' in rows
    assert 'hostname = "client.test"' in rows
    status, out, _ = run_config(["show", "--config", str(path), "--json"], capsys)
    document = json.loads(out)
    assert document["file"] == str(path) and "retry.lifetime" in document["defaults"]
    assert "retry.first" not in document["defaults"] and "hostname" not in document["defaults"]
    assert document["settings"]["routes"]["*"]["auth"]["password_command"][1:] == ["<redacted>"]
    status, _, err = run_config(["show", "--config", str(write_config(tmp_path, BROKEN))], capsys)
    assert status == 78 and len(err.splitlines()) == len(BROKEN_LINES)


def test_the_mxsend_config_command(tmp_path: Path) -> None:
    # Through the installed program, as a user runs it.
    path = write_config(tmp_path, BROKEN)
    done = subprocess.run([MXSEND, "config", "check", "--config", str(path)],
                          capture_output=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 78, done.stderr
    assert [int(x.split(":")[1]) for x in lines(done.stderr)] == BROKEN_LINES
    good = write_config(tmp_path, 'hostname = "client.test"\n', "good.toml")
    env = {**os.environ, "MXSEND_CONFIG": str(good)}
    shown = subprocess.run([MXSEND, "config", "show", "--json"], capture_output=True,
                           timeout=60, check=False, env=env)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["settings"]["hostname"] == "client.test"


# -- a broken file stops every command with its lines ------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["send", "--from", "a@client.test", "--to", "b@beta.test"],
        ["send", "--queue", "--to", "b@beta.test"],
        ["queue", "run"],
        ["queue", "list"],
        ["daemon"],
        ["plan", "--to", "b@beta.test"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_a_broken_file_exits_78_naming_each_line(
    argv: list[str], tmp_path: Path, message: Path
) -> None:
    path = write_config(tmp_path, BROKEN)
    message_arg = [str(message)] if argv[0] == "send" else []
    for done in (
        mxsend(*argv, "--config", str(path), *message_arg),
        mxsend(*argv, *message_arg, env={"MXSEND_CONFIG": str(path)}),
    ):
        assert done.returncode == 78, done.stderr
        found = lines(done.stderr)
        assert [int(x.split(":")[2]) for x in found] == BROKEN_LINES, found
        assert all(x.startswith(f"mxsend: {path}:") for x in found)
        assert done.stdout == b""
    missing = mxsend(*argv, "--config", str(tmp_path / "nope.toml"), *message_arg)
    assert missing.returncode == 78
    assert lines(missing.stderr) == [f"mxsend: {tmp_path / 'nope.toml'}: cannot read: "
                                     "No such file or directory"]  # fmt: skip


def test_the_twistd_plugin_reads_the_file_too(tmp_path: Path, message: Path) -> None:
    twistd = str(Path(sys.executable).parent / "twistd")
    path = write_config(tmp_path, BROKEN)
    for argv in (["send", "--from", "a@client.test", "--to", "b@beta.test", str(message)],
                 ["daemon"]):  # fmt: skip
        done = subprocess.run(
            [twistd, "-n", "--pidfile=", "mxsend", *argv, "--config", str(path)],
            capture_output=True, timeout=120, cwd=tmp_path, check=False,
        )  # fmt: skip
        assert done.returncode == 78, done.stdout + done.stderr
        assert [int(x.split(":")[2]) for x in lines(done.stderr)] == BROKEN_LINES


@pytest.mark.parametrize(
    ("argv", "dests"),
    [
        (["send"], ["dns", "mx_port", "tls", "helo", "cafile", "allow_cleartext_auth",
                    "no_chunking", "sender", "queue_dir"]),
        (["queue", "run"], ["dns", "mx_port", "helo", "queue_dir", "retry_first", "retry_max",
                            "lifetime", "bounce_lifetime", "delay_warning", "log_format"]),
        (["daemon"], ["workers", "connections", "poll", "processes", "grace", "log_format"]),
        (["plan"], ["dns", "mx_port", "tls"]),
    ],
    ids=["send", "queue run", "daemon", "plan"],
)  # fmt: skip
def test_each_option_names_its_config_key(argv: list[str], dests: list[str]) -> None:
    done = mxsend(*argv, "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.decode().split())
    assert "--config FILE read settings from FILE" in text
    for dest in dests:
        assert f"[config: {SETTINGS[dest].key}]" in text, dest
    if argv[0] != "daemon":
        assert '[config: routes."*".via]' in text and "[config: timeouts.STAGE]" in text


# -- precedence: options, then the file, then the defaults -------------------------------------


def plan(world: World, *argv: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = mxsend("plan", "--json", *argv, env=env)
    assert done.returncode in (0, 69, 75), done.stderr
    return dict(json.loads(done.stdout))


def test_options_win_over_the_file_and_the_file_over_the_defaults(
    world: World, tmp_path: Path
) -> None:
    dns = f'dns = "127.0.0.1:{world.dns_port}"\n'
    first = write_config(tmp_path, f"{dns}mx_port = 2601\n[timeouts]\nrcpt = '2m'\n", "a.toml")
    second = write_config(tmp_path, f"{dns}mx_port = 2602\n", "b.toml")

    def port(*argv: str, env: dict[str, str] | None = None) -> int:
        [alpha] = plan(world, "--to", "ann@alpha.test", *argv, env=env)["destinations"]
        return int(alpha["hosts"][0]["port"])

    assert port("--config", str(first)) == 2601
    assert port("--config", str(first), "--mx-port", "2603") == 2603
    assert port(env={"MXSEND_CONFIG": str(first)}) == 2601
    assert port("--config", str(second), env={"MXSEND_CONFIG": str(first)}) == 2602
    assert port("--dns", f"127.0.0.1:{world.dns_port}", env={"MXSEND_CONFIG": ""}) == 25
    timeouts = plan(world, "--to", "ann@alpha.test", "--config", str(first),
                    "--timeout", "connect=3")["timeouts"]  # fmt: skip
    assert timeouts["rcpt"] == 120 and timeouts["connect"] == 3 and timeouts["final"] == 600


def test_plan_shows_the_configured_routes(world: World, tmp_path: Path) -> None:
    path = write_config(tmp_path, (
        f'dns = "127.0.0.1:{world.dns_port}"\nmx_port = {world.mx_port}\ntls = "none"\n'
        '[routes."beta.test"]\ntls = "verify"\n'
        '[routes."alpha.test"]\nvia = "[127.0.0.9]:2525"\nconcurrency = 3\nrate = "10/m"\n'
        '[routes."*"]\nvia = "127.0.0.8:587"\ntls = "encrypt"\n'
    ))  # fmt: skip
    argv = ["--config", str(path), "--to", "bob@beta.test", "--to", "ann@alpha.test",
            "--to", "x@elsewhere.test", "--to", "y@gamma.test"]  # fmt: skip
    plans = {d["domain"]: d for d in plan(world, *argv)["destinations"]}
    assert set(plans) == {None, "alpha.test", "beta.test"}  # gamma and elsewhere: the "*" relay
    beta = plans["beta.test"]
    assert (beta["via"], beta["tls"], beta["tls_source"]) == ("mx", "verify", "config")
    assert beta["hosts"][0]["name"] == "mx.beta.test" and beta["hosts"][0]["port"] == world.mx_port
    alpha = plans["alpha.test"]
    assert alpha["via"] == "[127.0.0.9]:2525" and alpha["concurrency"] == 3
    assert alpha["rate"] == {"messages": 10, "seconds": 60.0}
    assert (alpha["tls"], alpha["tls_source"]) == ("none", "option")  # the file's tls key
    assert alpha["hosts"] == [{"name": "127.0.0.9", "preference": 0, "port": 2525,
                               "addresses": ["127.0.0.9"]}]  # fmt: skip
    star = plans[None]
    assert star["via"] == "[127.0.0.8]:587" and star["tls"] == "encrypt"
    # --smarthost replaces the "*" route; the others stay.
    plans = {d["domain"]: d for d in plan(world, *argv, "--smarthost", "127.0.0.7:2526",
                                          "--tls", "may")["destinations"]}  # fmt: skip
    assert plans[None]["hosts"][0]["port"] == 2526 and "via" not in plans[None]
    assert plans[None]["tls"] == "may" and plans["beta.test"]["tls"] == "verify"
    text = mxsend("plan", *argv)
    assert text.returncode == 0 and b"alpha.test via [127.0.0.9]:2525 (tls none):" in text.stdout


# -- real deliveries steered by the file -------------------------------------------------------


@dataclass
class RelayServer:
    """What the aiosmtpd relay saw: messages, OAUTHBEARER tokens and the client's answers to
    its error challenges, PLAIN logins, and the most sessions in DATA at once."""

    envelopes: list[Any] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    answers: list[bytes] = field(default_factory=list)
    logins: list[bytes] = field(default_factory=list)
    in_data: int = 0
    peak: int = 0
    hold: float = 0.0
    times: list[float] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.in_data += 1
        self.peak = max(self.peak, self.in_data)
        self.times.append(time.monotonic())
        await asyncio.sleep(self.hold)
        self.in_data -= 1
        self.envelopes.append(envelope)
        return "250 2.0.0 relayed"

    async def auth_OAUTHBEARER(self, server: Any, args: list[str]) -> AuthResult:
        # RFC 7628: n,a=user,^Aauth=Bearer TOKEN^A^A; a refusal is a 334 JSON challenge
        # the client answers with ^A, then the final 535.
        fields = base64.b64decode(args[1]).split(b"\x01")
        token = next(f for f in fields if f.startswith(b"auth=Bearer "))[12:].decode()
        self.tokens.append(token)
        if token == "fresh-token":
            return AuthResult(success=True, handled=False)
        answer = await server.challenge_auth(json.dumps({"status": "invalid_token"}))
        self.answers.append(answer)
        return AuthResult(success=False, handled=False, message="535 5.7.8 token expired")


def _plain(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    server.event_handler.logins.append(data.login)
    return AuthResult(success=data.login == b"me" and data.password == b"secret", handled=False)


@dataclass
class Relayed:
    port: int
    server: RelayServer
    cafile: Path  # trusts the relay's and the world's certificates


@pytest.fixture(scope="module")
def relay_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[int, RelayServer, TestCA]]:
    ca = TestCA("relay test CA")  # the world's CA has the default name: both are trusted
    folder = tmp_path_factory.mktemp("relay")
    issued = ca.issue("127.0.0.1")
    (folder / "cert.pem").write_bytes(issued.cert_pem)
    (folder / "key.pem").write_bytes(issued.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    server = RelayServer()
    port = free_port()
    controller = Controller(
        server, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
        authenticator=_plain, auth_require_tls=True,
    )  # fmt: skip
    controller.start()
    try:
        yield port, server, ca
    finally:
        controller.stop()


@pytest.fixture
def relay(relay_server: tuple[int, RelayServer, TestCA], world: World, tmp_path: Path) -> Relayed:
    port, server, ca = relay_server
    for name in ("envelopes", "tokens", "answers", "logins", "times"):
        getattr(server, name).clear()
    server.hold, server.peak = 0.0, 0
    cafile = tmp_path / "cas.pem"
    cafile.write_bytes(ca.cert_pem + world.cafile.read_bytes())
    return Relayed(port, server, cafile)


def token_command(tmp_path: Path) -> str:
    """A password command printing a stale token the first time, a fresh one after."""
    script = tmp_path / "token.py"
    script.write_text(
        "import pathlib, sys\n"
        "count = pathlib.Path(sys.argv[1])\n"
        "runs = int(count.read_text()) if count.exists() else 0\n"
        "count.write_text(str(runs + 1))\n"
        "print('stale-token' if runs == 0 else 'fresh-token')\n"
    )
    return json.dumps([sys.executable, str(script), str(tmp_path / "runs")])


def world_keys(world: World, relay: Relayed) -> str:
    return (
        f'hostname = "client.test"\ndns = "127.0.0.1:{world.dns_port}"\n'
        f'mx_port = {world.mx_port}\ncafile = "{relay.cafile}"\n'
    )


def test_routes_and_per_domain_tls_steer_delivery(
    world: World, relay: Relayed, tmp_path: Path, message: Path
) -> None:
    routes = (
        '[routes."beta.test"]\ntls = "verify"\n'  # STARTTLS, verified against the world's CA
        '[routes."alpha.test"]\ntls = "encrypt"\n'  # its MX offers no STARTTLS: must defer
        f'[routes."relay.test"]\nvia = "[127.0.0.1]:{relay.port}"\n'
        'auth = { username = "me@relay.test", mechanism = "OAUTHBEARER", '
        f"password_command = {token_command(tmp_path)} }}\n"
    )
    path = write_config(tmp_path, world_keys(world, relay) + routes)
    done = mxsend("send", "--config", str(path), "--from", "sender@client.test", "--json",
                  "--to", "bob@beta.test", "--to", "ann@alpha.test", "--to", "carol@relay.test",
                  str(message))  # fmt: skip
    assert done.returncode == 75, done.stdout + done.stderr
    by = {r["recipient"]: r for r in json.loads(done.stdout)["recipients"]}
    bob, ann, carol = by["bob@beta.test"], by["ann@alpha.test"], by["carol@relay.test"]
    assert bob["status"] == "delivered" and bob["tls"]["verified"] is True
    assert bob["mx"] == "mx.beta.test"
    assert ann["status"] == "deferred" and (ann["code"], ann["enhanced"]) == (451, "4.7.10")
    assert carol["status"] == "delivered" and carol["address"] == "127.0.0.1"
    assert carol["tls"]["verified"] is True
    # The stale token was refused; the command ran again and the fresh one was taken.
    assert relay.server.tokens == ["stale-token", "fresh-token"]
    assert relay.server.answers == [b"\x01"]
    assert (tmp_path / "runs").read_text() == "2"
    [envelope] = relay.server.envelopes
    assert envelope.rcpt_tos == ["carol@relay.test"] and envelope.mail_from == "sender@client.test"
    # Without its route, alpha.test's mail goes in cleartext as the default policy allows.
    plain = write_config(tmp_path, world_keys(world, relay), "plain.toml")
    done = mxsend("send", "--config", str(plain), "--from", "sender@client.test", "--json",
                  "--to", "ann@alpha.test", str(message))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_failing_password_command_defers(
    world: World, relay: Relayed, tmp_path: Path, message: Path
) -> None:
    failing = json.dumps([sys.executable, "-c", "import sys; sys.exit('no token today')"])
    path = write_config(tmp_path, world_keys(world, relay) + (
        f'[routes."relay.test"]\nvia = "[127.0.0.1]:{relay.port}"\n'
        f'auth = {{ username = "me", mechanism = "XOAUTH2", password_command = {failing} }}\n'
    ))  # fmt: skip
    done = mxsend("send", "--config", str(path), "--from", "sender@client.test", "--json",
                  "--to", "carol@relay.test", str(message))  # fmt: skip
    assert done.returncode == 75, done.stdout + done.stderr
    [carol] = json.loads(done.stdout)["recipients"]
    assert (carol["code"], carol["enhanced"], carol["failure"]) == (451, "4.7.0", "auth")
    assert "exited with status 1" in carol["reply"]
    assert "no token today" not in carol["reply"]  # its stderr may hold a secret: never shown
    assert relay.server.envelopes == [] and relay.server.tokens == []


def test_queue_from_the_file_then_run_through_its_routes(
    world: World, relay: Relayed, tmp_path: Path, message: Path
) -> None:
    password = tmp_path / "relay.password"
    password.write_text("secret\n")
    password.chmod(0o600)
    spool = tmp_path / "spool"
    path = write_config(tmp_path, world_keys(world, relay) + (
        f'queue_dir = "{spool}"\nsender = "bounces@client.test"\ndomain = "beta.test"\n'
        'tls = "verify"\nlog_format = "json"\n[retry]\nfirst = "10m"\n'
        '[routes."beta.test"]\nvia = "mx"\n'
        f'[routes."*"]\nvia = "[127.0.0.1]:{relay.port}"\n'
        f'auth = {{ username = "me", password_file = "{password}" }}\n'
    ))  # fmt: skip
    # The file's delivery settings do not count as options --queue would forget.
    to = ["--to", "root", "--to", "dave@elsewhere.test", "--to", "busy@gamma.test"]
    queued = mxsend("send", "--queue", "--config", str(path), "--json", *to, str(message))
    assert queued.returncode == 0, queued.stderr
    assert json.loads(queued.stdout)["queue_dir"] == str(spool)
    listed = json.loads(mxsend("queue", "list", "--json", "--config", str(path)).stdout)
    [entry] = listed["entries"]
    assert entry["sender"] == "bounces@client.test"  # the file's sender, not the From header
    assert [r["address"] for r in entry["recipients"]] == [
        "root@beta.test", "dave@elsewhere.test", "busy@gamma.test"]  # fmt: skip
    done = mxsend("queue", "run", "--config", str(path), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"entries": 1, "delivered": 3, "deferred": 0, "failed": 0,
                                       "bounces": 0}  # fmt: skip
    log = {x["recipient"]: x for x in map(json.loads, done.stderr.decode().splitlines())}
    assert {x["status"] for x in log.values()} == {"sent"}
    # root@beta.test to its MX; the rest through the "*" relay, busy@gamma.test too (gamma's
    # own MX would have deferred it), with PLAIN and the password from the file.
    assert log["root@beta.test"]["relay"].startswith("mx.beta.test[127.0.0.4]")
    assert log["dave@elsewhere.test"]["relay"].startswith("127.0.0.1[127.0.0.1]")
    assert log["busy@gamma.test"]["relay"].startswith("127.0.0.1[127.0.0.1]")
    assert relay.server.logins == [b"me"]
    [envelope] = relay.server.envelopes
    assert envelope.rcpt_tos == ["dave@elsewhere.test", "busy@gamma.test"]
    assert envelope.mail_from == "bounces@client.test"


def test_the_daemon_takes_its_settings_from_the_file(
    world: World, relay: Relayed, tmp_path: Path, message: Path
) -> None:
    spool = tmp_path / "spool"
    path = write_config(tmp_path, world_keys(world, relay) + (
        f'queue_dir = "{spool}"\nlog_format = "json"\n[daemon]\npoll = "60s"\nworkers = 2\n'
    ))  # fmt: skip
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "mxsend", "daemon"], stderr=log,
            env={**os.environ, "MXSEND_CONFIG": str(path)},
        )  # fmt: skip
    try:
        wait_for(lambda: b"serving" in log_path.read_bytes(), child, log_path)
        assert str(spool).encode() in log_path.read_bytes()
        env = {"MXSEND_CONFIG": str(path)}
        queued = mxsend("send", "--queue", "--from", "sender@client.test",
                        "--to", "ann@alpha.test", str(message), env=env)  # fmt: skip
        assert queued.returncode == 0, queued.stderr

        def sent() -> bool:
            rows = [json.loads(x) for x in log_path.read_bytes().splitlines() if x[:1] == b"{"]
            return any(r.get("status") == "sent" for r in rows)

        wait_for(sent, child, log_path)  # woken by the submission, not by the 60 s poll
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)


def wait_for(predicate: Any, child: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        assert child.poll() is None, log.read_bytes()
        assert time.monotonic() < deadline, log.read_bytes()
        time.sleep(0.05)


# -- the shell's side of routes: limits, secrets, concurrency ---------------------------------


class SharedRouteState(TestCase):
    timeout = 60

    def test_a_rate_lets_a_burst_through_then_waits_for_tokens(self) -> None:
        clock = task.Clock()
        state = RouteState(clock)
        rate = Rate(2, 3.0)
        first = Deferred.fromCoroutine(state.take("d", rate, 2))
        self.successResultOf(first)
        second = Deferred.fromCoroutine(state.take("d", rate, 1))
        other = Deferred.fromCoroutine(state.take("elsewhere", rate, 2))
        self.successResultOf(other)  # a bucket per destination
        assert not second.called
        clock.advance(1.4)
        assert not second.called
        clock.advance(0.2)  # one token takes 1.5 s to come back
        self.successResultOf(second)
        third = Deferred.fromCoroutine(state.take("d", rate, 2))
        fourth = Deferred.fromCoroutine(state.take("d", rate, 1))
        clock.advance(3.0)
        self.successResultOf(third)
        assert not fourth.called  # in turn: the first in line is served first
        clock.advance(1.5)
        self.successResultOf(fourth)

    def test_sessions_slots_are_shared_per_destination(self) -> None:
        state = RouteState(task.Clock())
        assert state.slots("d", 2) is state.slots("d", 2)
        assert state.slots("d", 2) is not state.slots("e", 2)
        assert state.slots("d", 3).limit == 3

    async def _commands(self) -> None:
        python = sys.executable
        assert await run_command(reactor, (python, "-c", "print('tok')")) == "tok"
        crlf = "import sys; sys.stdout.write('a b\\r\\n')"
        assert await run_command(reactor, (python, "-c", crlf)) == "a b"
        cases = [
            ((python, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"),
             "exited with status 3 (its 5 bytes of error output are not shown)"),
            ((python, "-c", "pass"), "printed nothing"),
            ((python, "-c", "print('a'); print('b')"), "printed more than one line"),
            ((python, "-c", "import time; time.sleep(30)"), "still running after 0.5s, killed"),
            (("/no/such/program",), "no such program"),
        ]  # fmt: skip
        for argv, why in cases:
            with pytest.raises(CredentialsError) as caught:
                await run_command(reactor, argv, seconds=0.5)
            assert why in str(caught.value)

    def test_password_commands(self) -> Deferred[None]:
        return ensureDeferred(self._commands())

    async def _renewal(self) -> None:
        folder = temp_dir(self)
        argv = tuple(json.loads(token_command(folder)))
        state = RouteState(reactor)
        command = Auth("me", "OAUTHBEARER", password_command=argv)
        first = await state.mechanism(command)
        again = await state.mechanism(command)
        assert first is not again  # a fresh mechanism each session, one secret
        assert b"auth=Bearer stale-token" in (first.initial_response() or b"")
        assert (folder / "runs").read_text() == "1"
        assert state.renew(command)
        renewed = await state.mechanism(command)
        assert b"auth=Bearer fresh-token" in (renewed.initial_response() or b"")
        (folder / "pw").write_text("secret\nignored\n")
        (folder / "pw").chmod(0o600)
        from_file = Auth("me", "LOGIN", password_file=str(folder / "pw"))
        login = await state.mechanism(from_file)
        assert [login.respond(b"Username:"), login.respond(b"Password:")] == [b"me", b"secret"]
        assert not state.renew(from_file)  # a file gives the same password again
        (folder / "pw").unlink()
        with pytest.raises(CredentialsError):
            await state.mechanism(from_file)

    def test_secrets_are_kept_until_refused(self) -> Deferred[None]:
        return ensureDeferred(self._renewal())

    def test_oauthbearer(self) -> None:
        bearer = OAuthBearer("me,=x@example.com", "TOKEN")
        expected = b"n,a=me=2C=3Dx@example.com,\x01auth=Bearer TOKEN\x01\x01"
        assert bearer.initial_response() == expected
        assert bearer.respond(b'{"status":"invalid_token"}') == b"\x01"
        with pytest.raises(AuthenticationError):
            bearer.respond(b"{}")


class RouteLimits(TestCase):
    """A route's concurrency and rate, against a relay that holds each message a while."""

    timeout = 60

    def setUp(self) -> None:
        self.server = RelayServer(hold=0.3)
        self.port = free_port()
        self.controller = Controller(self.server, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        self.addCleanup(self.controller.stop)

    async def _send(self, route: DomainRoute, count: int) -> list[Status]:
        router = DNSRouter(make_resolver(("127.0.0.1", 9), reactor), reactor)  # no DNS asked
        options = DeliveryOptions("client.test", limits=Limits(connections=4))
        routes = RouteTable({"relay.test": route})
        messages = [Message(Envelope.build("s@client.test", [f"r{i}@relay.test"]), b"hi\n")
                    for i in range(count)]  # fmt: skip
        reports = await Deliverer(reactor, router, options, routes=routes).deliver(messages)
        return [r.status for report in reports for r in report.recipients]

    async def _concurrency(self) -> None:
        relay = Relay("127.0.0.1", self.port)
        free = await self._send(DomainRoute(relay=relay, tls=TLSPolicy.NONE), 4)
        assert free == [Status.DELIVERED] * 4
        assert self.server.peak > 1  # four sessions at once without a limit
        self.server.peak = 0
        one = await self._send(DomainRoute(relay=relay, tls=TLSPolicy.NONE, concurrency=1), 4)
        assert one == [Status.DELIVERED] * 4
        assert self.server.peak == 1

    def test_concurrency_limits_sessions(self) -> Deferred[None]:
        return ensureDeferred(self._concurrency())

    async def _learned(self) -> None:
        # Three batches at once (a daemon's workers), 4 sessions each, to a destination no
        # route limits: together they start at 5 sessions (Postfix's initial concurrency)
        # and grow by about one per round, not 12 at once.
        router = DNSRouter(make_resolver(("127.0.0.1", 9), reactor), reactor)
        options = DeliveryOptions("client.test", limits=Limits(connections=4))
        routes = RouteTable({"relay.test": DomainRoute(relay=Relay("127.0.0.1", self.port),
                                                       tls=TLSPolicy.NONE)})  # fmt: skip
        state = RouteState(reactor)
        batches = [
            [Message(Envelope.build("s@client.test", [f"r{b}{i}@relay.test"]), b"hi\n")
             for i in range(4)]
            for b in range(3)
        ]  # fmt: skip
        reports = await gatherResults([
            Deliverer(reactor, router, options, routes=routes, state=state).deliver(batch)
            for batch in batches
        ])  # fmt: skip
        statuses = [r.status for batch in reports for report in batch for r in report.recipients]
        assert statuses == [Status.DELIVERED] * 12
        assert 1 < self.server.peak <= 6

    def test_a_destination_s_concurrency_is_learned_across_batches(self) -> Deferred[None]:
        return ensureDeferred(self._learned())

    async def _rate(self) -> None:
        self.server.hold = 0.0
        route = DomainRoute(relay=Relay("127.0.0.1", self.port), tls=TLSPolicy.NONE,
                            rate=Rate(2, 1.0))  # fmt: skip
        assert await self._send(route, 3) == [Status.DELIVERED] * 3
        first, second, third = sorted(self.server.times)
        assert second - first < 0.4  # the burst
        assert third - first >= 0.45  # one token back after 0.5 s

    def test_rate_spaces_messages(self) -> Deferred[None]:
        return ensureDeferred(self._rate())
