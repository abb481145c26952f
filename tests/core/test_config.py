"""The config file, pure: which file, every key's checks with its line, the line finder,
the shown form that reads back, and the values the rest of mxsend reads."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from mxsend.config import (
    SCHEMA,
    SYSTEM_CONFIG,
    Config,
    ConfigError,
    DkimKeyConfig,
    SubmitRule,
    as_table,
    default_config_path,
    dump_toml,
    find_config,
    key_lines,
    load_config,
)
from mxsend.dkim import keygen
from mxsend.routing import TLSPolicy
from mxsend.routing._table import Auth, DomainRoute, Rate, Relay, RouteTable

EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "mxsend.toml"


def write(folder: Path, text: str, name: str = "mxsend.toml") -> Path:
    path = folder / name
    path.write_text(text)
    path.chmod(0o644)
    return path


@functools.cache
def key_pem() -> bytes:
    """A real RSA key, made once: the checks load DKIM keys as signing does."""
    with tempfile.TemporaryDirectory() as folder:
        keygen("a.example", "s", "rsa", Path(folder) / "k")
        return (Path(folder) / "k").read_bytes()


def secret_files(folder: Path, *, password: bytes = b"secret\n") -> None:
    """What the cases name: a password file ``pw`` and a DKIM key ``key.pem``, mode 0600."""
    for name, data in (("pw", password), ("key.pem", key_pem())):
        (folder / name).write_bytes(data)
        (folder / name).chmod(0o600)


def problems(folder: Path, text: str) -> list[tuple[int | None, str]]:
    """The (line, message) of every problem of ``text`` as a config file."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(folder, text))
    return [(p.line, p.message) for p in caught.value.problems]


def one_problem(folder: Path, text: str) -> tuple[int | None, str]:
    found = problems(folder, text)
    assert len(found) == 1, found
    return found[0]


# -- which file ------------------------------------------------------------------------------


def test_find_config_prefers_the_option_then_the_variable_then_the_default(tmp_path: Path) -> None:
    env = {"MXSEND_CONFIG": "/from/env.toml", "XDG_CONFIG_HOME": str(tmp_path)}
    assert find_config(env, explicit="/given.toml", euid=1000) == Path("/given.toml")
    assert find_config(env, euid=1000) == Path("/from/env.toml")
    del env["MXSEND_CONFIG"]
    assert find_config(env, euid=1000) is None  # the default file is absent: no config
    default = tmp_path / "mxsend" / "mxsend.toml"
    default.parent.mkdir()
    default.write_text("")
    assert find_config(env, euid=1000) == default
    # Empty values are unset ones.
    unset = {"MXSEND_CONFIG": "", "XDG_CONFIG_HOME": str(tmp_path)}
    assert find_config(unset, explicit="", euid=1000) == default


def test_default_path_by_user() -> None:
    assert default_config_path({}, euid=0) == SYSTEM_CONFIG == Path("/etc/mxsend/mxsend.toml")
    xdg = {"XDG_CONFIG_HOME": "/x/conf", "HOME": "/home/u"}
    assert default_config_path(xdg, euid=1000) == Path("/x/conf/mxsend/mxsend.toml")
    # The XDG spec: a relative XDG_CONFIG_HOME is ignored, ~/.config is used.
    relative = {"XDG_CONFIG_HOME": "conf", "HOME": "/home/u"}
    assert default_config_path(relative, euid=1000) == Path("/home/u/.config/mxsend/mxsend.toml")
    assert default_config_path({"HOME": "/home/u"}, euid=1000).parent == Path(
        "/home/u/.config/mxsend"
    )


def test_no_file_is_the_empty_config() -> None:
    assert load_config(None) == Config()


def test_explicit_file_that_is_absent_or_unreadable_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml")
    [problem] = caught.value.problems
    assert problem.line is None and "cannot read: No such file" in problem.message
    assert str(problem) == f"{tmp_path / 'absent.toml'}: {problem.message}"
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(tmp_path)
    locked = write(tmp_path, "")
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads anything: a FIFO cannot be read as a file either
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(ConfigError, match="not a regular file"):
            load_config(tmp_path / "fifo")
    else:
        with pytest.raises(ConfigError, match="Permission denied"):
            load_config(locked)


def test_a_file_others_can_change_is_refused(tmp_path: Path) -> None:
    # It names commands to run: a file others may write would run their commands.
    path = write(tmp_path, 'hostname = "h.example"\n')
    path.chmod(0o666)
    with pytest.raises(ConfigError, match=r"writable by other users \(mode 0666\)"):
        load_config(path)
    path.chmod(0o664)
    if os.geteuid() == 0:
        os.chown(path, 0, 65534)
        with pytest.raises(ConfigError, match="writable by other users"):
            load_config(path)
        os.chown(path, 65534, 0)
        path.chmod(0o644)
        with pytest.raises(ConfigError, match="owned by uid 65534"):
            load_config(path, euid=0)
    else:
        assert load_config(path).hostname == "h.example"  # a user's group is their own
        path.chmod(0o644)
        with pytest.raises(ConfigError, match=f"owned by uid {os.geteuid()}"):
            load_config(path, euid=os.geteuid() + 1)


# -- every problem with its line -------------------------------------------------------------


def test_toml_syntax_error_names_its_line(tmp_path: Path) -> None:
    line, message = one_problem(tmp_path, 'hostname = "a.example"\n\nmx_port = = 25\n')
    assert line == 3 and message.startswith("not valid TOML: ") and "(column" in message
    line, message = one_problem(tmp_path, '[retry]\nfirst = "5m"\n[retry]\n')
    assert line == 3 and "not valid TOML" in message
    path = tmp_path / "raw.toml"
    path.write_bytes(b'hostname = "a.example"\nsender = "\xff@x"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [(p.line, p.message) for p in caught.value.problems] == [(2, "not UTF-8 text")]


UNKNOWN = [
    ("helo = 'x.example'\n", 1, "helo: unknown key"),
    ("\n[retry]\nfrist = '5m'\n", 3, "retry.frist: unknown key; did you mean 'first'?"),
    ("[timeouts]\nconnect = 3\nbogus = 1\n", 3, "timeouts.bogus: unknown key (known: connect"),
    ("[daemon]\nworker = 2\n", 2, "daemon.worker: unknown key; did you mean 'workers'?"),
    ("[sendmail]\nmode = 'queue'\n", 2, "sendmail.mode: unknown key"),
    ("[submit]\ndeny = []\n", 2, "submit.deny: unknown key"),
    ("[[submit.allow]]\nuser = 'a'\nsenders = ['*']\nuid2 = 1\n", 4, "submit.allow[0].uid2"),
    ('[routes."a.example"]\ntsl = "may"\n', 2, 'routes."a.example".tsl: unknown key; did you mean'),
    (
        '[routes."*"]\nvia = "[r.example]:587"\n'
        'auth = { username = "u", password_file = "pw", pasword = "x" }\n',
        3,
        'routes."*".auth.pasword: unknown key',
    ),
    (
        '[[dkim."a.example"]]\nselector = "s"\nkey_file = "key.pem"\nalgo = "rsa"\n',
        4,
        'dkim."a.example"[0].algo: unknown key',
    ),
    ("[[route]]\nvia = 'mx'\n", 1, "route: unknown key; did you mean 'routes'?"),
]


@pytest.mark.parametrize(("text", "line", "message"), UNKNOWN)
def test_unknown_keys_at_every_level(tmp_path: Path, text: str, line: int, message: str) -> None:
    secret_files(tmp_path)
    found_line, found = one_problem(tmp_path, text)
    assert (found_line, found[: len(message)]) == (line, message), found


# Each case: the file, with "#<" at the end of the line the problem must name, and how the
# problem starts.
BAD_VALUES = [
    # wrong types
    ("hostname = 5 #<", "hostname: expected a non-empty string without control characters, got 5"),
    ('chunking = "yes" #<', "chunking: expected true or false, got 'yes'"),
    ("mx_port = true #<", "mx_port: expected an integer from 1 to 65535, got true"),
    ("mx_port = 70000 #<", "mx_port: expected an integer from 1 to 65535, got 70000"),
    ('retry = "5m" #<', "retry: expected a table, got '5m'"),
    ("routes = 5 #<", "routes: expected a table, got 5"),
    ("[submit]\nallow = 1 #<", "submit.allow: expected an array of tables"),
    ('log_format = "xml" #<', "log_format: expected one of 'text', 'json', got 'xml'"),
    ('sender = "" #<', "sender: expected a non-empty string"),
    (
        "sender = 1979-05-27 #<",
        "sender: expected a non-empty string without control characters, got a date or time",
    ),
    # durations
    ('[retry]\nfirst = "5 minutes" #<', 'retry.first: expected a duration such as "30s"'),
    ('[retry]\nlifetime = "-1d" #<', "retry.lifetime: expected a duration"),
    ("[retry]\nmax = 0 #<", "retry.max: expected a duration"),
    ('[retry]\ndelay_warning = "soon" #<', "retry.delay_warning: expected a duration"),
    ("[timeouts]\nrcpt = 0 #<", "timeouts.rcpt: expected a duration"),
    (
        '[timeouts]\nfinal = "2d" #<',
        'timeouts.final: expected a duration such as "30s", "5m", '
        '"1h" or "5d", at most 86400 seconds',
    ),
    ("[daemon]\npoll = -1 #<", "daemon.poll: expected a duration"),
    ("[daemon]\nprocesses = 65 #<", "daemon.processes: expected an integer from 1 to 64"),
    ('[daemon]\ncommit_interval = "2m" #<', "daemon.commit_interval: expected a duration such"),
    ("[daemon]\ncommit_interval = -0.1 #<", "daemon.commit_interval: expected a duration"),
    ('[retry] #<\nfirst = "2h"\nmax = "1h"', "retry: first (2h) must not be longer than maximum"),
    # addresses and domains
    ('sender = "nobody" #<', "sender: expected an address like user@example.com"),
    ('sender = "a@b@" #<', "sender: expected an address like user@example.com"),
    ('hostname = "bad_name.example" #<', "hostname: expected a domain name"),
    ('[sendmail]\nforce_sender = "x y@z.example" #<', "sendmail.force_sender: expected an address"),
    (
        '[sendmail]\nmasquerade_domain = "-x.example" #<',
        "sendmail.masquerade_domain: expected a domain name",
    ),
    (
        '[sendmail]\ndelivery = "later" #<',
        "sendmail.delivery: expected one of 'background', 'interactive', 'queue', got 'later'",
    ),
    ('dns = "ns.example:53" #<', 'dns: expected an IP address, not a name ("127.0.0.1:53")'),
    ('dns = "127.0.0.1:0" #<', "dns: expected an IP address with an optional port"),
    # routes
    (
        '[routes."a.example"]\nvia = "smtp.example:port" #<',
        'routes."a.example".via: expected "mx" '
        "or a relay as \"[host]:port\", got 'smtp.example:port'",
    ),
    ('[routes."a.example"]\nvia = "[r.example" #<', 'routes."a.example".via: expected "mx" or a'),
    ('[routes."a.example"]\nvia = "bad_host:25" #<', 'routes."a.example".via: expected a domain'),
    ('[routes."a.example"]\nvia = 25 #<', 'routes."a.example".via: expected "mx" or a relay'),
    ('[routes."exa mple.com"] #<\nvia = "mx"', 'routes."exa mple.com": expected a domain name'),
    (
        '[routes."a.example"]\ntls = "strict" #<',
        'routes."a.example".tls: expected one of '
        "'none', 'may', 'encrypt', 'verify', got 'strict'",
    ),
    ('tls = "on" #<', "tls: expected one of 'none', 'may', 'encrypt', 'verify', got 'on'"),
    (
        '[routes."a.example"]\nconcurrency = 0 #<',
        'routes."a.example".concurrency: expected an integer from 1 to 1000',
    ),
    ('[routes."a.example"]\nrate = "fast" #<', 'routes."a.example".rate: expected a rate'),
    ('[routes."a.example"]\nrate = "0/m" #<', 'routes."a.example".rate: expected a rate'),
    ('[routes."a.example"]\nrate = "10/fortnight" #<', 'routes."a.example".rate: expected a rate'),
    (
        '[routes."a.example"]\nauth = { username = "u", password_file = "pw" } #<',
        'routes."a.example".auth: AUTH is only sent to a relay',
    ),
    (
        '[routes."a.example"]\nvia = "mx"\nauth = { username = "u", password_file = "pw" } #<',
        'routes."a.example".auth: AUTH is only sent to a relay',
    ),
    (
        '[routes."*"]\nvia = "r.example"\nauth = { password_file = "pw" } #<',
        'routes."*".auth: missing username',
    ),
    (
        '[routes."*"]\nvia = "r.example"\nauth = { username = "u" } #<',
        'routes."*".auth: give password_file or password_command',
    ),
    (
        '[routes."*"]\nvia = "r.example"\n'
        'auth = { username = "u", password_file = "pw", password_command = "cat pw" } #<',
        'routes."*".auth: give password_file or password_command, not both',
    ),
    (
        '[routes."*"]\nvia = "r.example"\n'
        'auth = { username = "u", password_file = "pw", mechanism = "GSSAPI" } #<',
        "routes.\"*\".auth.mechanism: expected one of 'PLAIN', 'LOGIN'",
    ),
    (
        '[routes."*"]\nvia = "r.example"\nauth = { username = "u", password_file = "nope" } #<',
        'routes."*".auth.password_file: cannot read ',
    ),
    (
        '[routes."*"]\nvia = "r.example"\n'
        'auth = { username = "u", password_command = ["/no/such/program"] } #<',
        'routes."*".auth.password_command: no such program: /no/such/program',
    ),
    (
        '[routes."*"]\nvia = "r.example"\n'
        'auth = { username = "u", password_command = "cat \'pw" } #<',
        'routes."*".auth.password_command: expected a command',
    ),
    (
        '[routes."*"]\nvia = "r.example"\nauth = { username = "u", password_command = [] } #<',
        'routes."*".auth.password_command: expected a command',
    ),
    # submission rules
    (
        "[[submit.allow]] #<\nuser = 'a'\nuid = 1\nsenders = ['*']",
        "submit.allow[0]: give exactly one of user, uid or group, not user and uid",
    ),
    ("[[submit.allow]] #<\nuser = 'a'", "submit.allow[0]: missing senders"),
    ("[[submit.allow]]\nuid = -1 #<\nsenders = ['*']", "submit.allow[0].uid: expected an integer"),
    (
        "[[submit.allow]]\ngroup = 'g'\nsenders = [] #<",
        "submit.allow[0].senders: expected a non-empty array of sender patterns",
    ),
    (
        "[[submit.allow]]\ngroup = 'g'\nsenders = [\n  '*',\n  '*@bad_domain', #<\n]",
        "submit.allow[0].senders[1]: expected a domain name",
    ),
    # DKIM
    (
        '[[dkim."a.example"]]\nselector = "s1"\nkey_file = "missing.pem" #<',
        'dkim."a.example"[0].key_file: cannot read ',
    ),
    ('[[dkim."a.example"]] #<\nkey_file = "key.pem"', 'dkim."a.example"[0]: missing selector'),
    (
        '[[dkim."a.example"]]\nselector = "s1"\nkey_file = "key.pem"\nalgorithm = "dsa" #<',
        "dkim.\"a.example\"[0].algorithm: expected one of 'rsa', 'ed25519', got 'dsa'",
    ),
    (
        '[dkim."a.example"]\nselector = "s_1" #<\nkey_file = "key.pem"',
        'dkim."a.example".selector: expected a domain name',
    ),
    (
        '[[dkim."a.example"]] #<\nselector = "s1"\nkey_file = "key.pem"\n'
        '[[dkim."a.example"]]\nselector = "s1"\nkey_file = "key.pem"',
        "dkim.\"a.example\": selector 's1' given twice",
    ),
    ('cafile = "nothing.pem" #<', "cafile: cannot read "),
]


@pytest.mark.parametrize(("text", "message"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_every_bad_value_is_one_problem_on_its_line(
    tmp_path: Path, text: str, message: str
) -> None:
    secret_files(tmp_path)
    # Comment lines first, so that a wrong line number cannot pass by being line 1.
    document = "# a\n# b\n" + text + "\n"
    [marked] = [n for n, row in enumerate(document.splitlines(), 1) if row.endswith("#<")]
    line, found = one_problem(tmp_path, document)
    assert found.startswith(message), found
    assert line == marked, (line, document)


def test_secret_files_are_checked_as_send_would(tmp_path: Path) -> None:
    # A password file or a DKIM key that delivery would refuse is a problem on its line.
    secret_files(tmp_path)
    (tmp_path / "bad.pem").write_bytes(b"x\n")
    (tmp_path / "bad.pem").chmod(0o600)
    os.mkfifo(tmp_path / "fifo", 0o600)
    route = '# a\n[routes."*"]\nvia = "r.example"\n'
    route += 'auth = {{ username = "u", password_file = "{}" }}\n'
    dkim = '# a\n[[dkim."a.example"]]\nselector = "s"\n{}key_file = "{}"\n'
    cases = [
        (route.format("pw"), 0o644, 4, "pw is open to other users (mode 0644): chmod o-rwx it"),
        (route.format("pw"), 0o660, 4, "pw is writable by its group (mode 0660): chmod g-w it"),
        (route.format("fifo"), None, 4, "fifo: not a regular file"),
        (dkim.format("", "key.pem"), 0o644, 4, "is open to other users (mode 0644)"),
        (dkim.format("", "key.pem"), 0o620, 4, "is writable by its group (mode 0620)"),
        (dkim.format("", "bad.pem"), None, 4, "bad.pem: is not a PEM private key"),
        (dkim.format('algorithm = "ed25519"\n', "key.pem"), None, 5, "holds an RSA key"),
    ]
    for text, mode, line, why in cases:
        for name in ("pw", "key.pem"):
            (tmp_path / name).chmod(0o600 if mode is None else mode)
        found_line, found = one_problem(tmp_path, text)
        assert (found_line, why in found) == (line, True), (found, text)
    for name in ("pw", "key.pem"):
        (tmp_path / name).chmod(0o640)  # group-readable is fine
    config = load_config(write(tmp_path, route.format("pw") + dkim.format("", "key.pem")))
    assert config.dkim["a.example"][0].key_file == str(tmp_path / "key.pem")


def test_a_program_is_kept_as_found_when_the_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "token").write_text("#!/bin/sh\necho t\n")
    (folder / "token").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    text = '[routes."*"]\nvia = "r.example"\n'
    text += 'auth = { username = "u", password_command = "token -x" }\n'
    auth = load_config(write(tmp_path, text)).routes["*"].auth
    assert auth is not None and auth.password_command == (str(folder / "token"), "-x")


def test_deep_nesting_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    deep = "a = " + "[" * 5000 + "]" * 5000
    assert one_problem(tmp_path, f"# x\nhostname = 'h.example'\n{deep}\n") == (
        3, "nested more than 32 levels deep"
    )  # fmt: skip
    # Brackets in strings and comments are not nesting.
    text = f"# {'[' * 50}\nhostname = \"{'[' * 50}\"\nsender = '''\n{'{' * 50}'''\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert "nested" not in str(caught.value)


def test_every_problem_is_reported_at_once_in_line_order(tmp_path: Path) -> None:
    text = (
        "hostname = 'ok.example'\n"  # 1
        "mx_port = 0\n"  # 2
        "[retry]\n"  # 3
        "first = 'soon'\n"  # 4
        "[routes.'a.example']\n"  # 5
        "tls = 'strict'\n"  # 6
        "via = 'mx'\n"  # 7
        "rate = 'lots'\n"  # 8
        "[[dkim.'b.example']]\n"  # 9
        "selector = 's'\n"  # 10
        "key_file = '/no/key.pem'\n"  # 11
        "bogus = 1\n"  # 12
    )
    found = problems(tmp_path, text)
    assert [line for line, _ in found] == [2, 4, 6, 8, 11, 12], found
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    path = str(tmp_path / "mxsend.toml")
    lines = str(caught.value).splitlines()
    assert len(lines) == 6 and all(x.startswith(f"{path}:") for x in lines)
    assert lines[0] == f"{path}:2: mx_port: expected an integer from 1 to 65535, got 0"


def test_lines_of_dotted_quoted_and_inline_keys(tmp_path: Path) -> None:
    text = (
        "# comment [routes] = 1\n"
        "'routes'.\"a.example\".tls = 'nope'\n"  # 2: dotted and quoted at the top level
        "routes.'b.example' = { via = 'r.example', auth = { username = 'u', password_file = "
        "'/absent' } }\n"  # 3: inline tables
        '[routes."c\\u002eexample"]\n'  # 4: an escape in a quoted key
        "concurrency = 'two'\n"  # 5
    )
    assert problems(tmp_path, text) == [
        (2, "routes.\"a.example\".tls: expected one of 'none', 'may', 'encrypt', 'verify', "
            "got 'nope'"),
        (3, 'routes."b.example".auth.password_file: cannot read /absent: no such file'),
        (5, 'routes."c.example".concurrency: expected an integer from 1 to 1000, got \'two\''),
    ]  # fmt: skip


def test_key_lines() -> None:
    text = """\
a = 1
s = '''
b = 2
[not] = a header
'''
m = \"\"\"x \\\"\"\" [fake]
\"\"\"
arr = [
  1, # one
  [2, 3],
  { k = "v" },
]
[t."q.k".u]
x.y = "z"
[[aot]]
v = 1
[[aot]]
v = 2
[aot.sub]
w = 3
"""
    lines = key_lines(text)
    assert tomllib.loads(text)["aot"][1]["sub"]["w"] == 3
    assert lines[("a",)] == 1 and lines[("s",)] == 2 and lines[("m",)] == 6
    assert ("b",) not in lines and ("not",) not in lines and ("fake",) not in lines
    assert lines[("arr",)] == 8 and lines[("arr", 0)] == 9 and lines[("arr", 1)] == 10
    assert lines[("arr", 1, 1)] == 10 and lines[("arr", 2, "k")] == 11
    assert lines[("t", "q.k", "u")] == 13 and lines[("t", "q.k", "u", "x", "y")] == 14
    assert lines[("aot",)] == 15 and lines[("aot", 0)] == 15 and lines[("aot", 1)] == 17
    assert lines[("aot", 0, "v")] == 16 and lines[("aot", 1, "v")] == 18
    assert lines[("aot", 1, "sub")] == 19 and lines[("aot", 1, "sub", "w")] == 20


# -- what a good file gives -------------------------------------------------------------------


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """examples/mxsend.toml with its files made, under tmp_path."""
    text = EXAMPLE.read_text().replace("/etc/mxsend/", f"{tmp_path}/")
    program = tmp_path / "oauth2-token"
    program.write_text("#!/bin/sh\necho token\n")
    program.chmod(0o755)
    text = text.replace("/usr/local/bin/oauth2-token", str(program))
    (tmp_path / "dkim").mkdir()
    (tmp_path / "private-ca.pem").write_text("x\n")
    secret_files(tmp_path)
    (tmp_path / "pw").rename(tmp_path / "relay.password")
    (tmp_path / "key.pem").rename(tmp_path / "dkim/example.com.mail2024.pem")
    keygen("example.com", "ed2024", "ed25519", tmp_path / "dkim/example.com.ed2024.pem")
    return write(tmp_path, text)


def test_the_example_loads_and_says_everything(example: Path, tmp_path: Path) -> None:
    config = load_config(example)
    assert config.hostname == "mail.example.com" and config.sender == "bounces@example.com"
    assert config.domain == "example.com" and config.queue_dir == "/var/spool/mxsend"
    assert config.dns == ("127.0.0.1", 53) and config.mx_port == 25
    # tls is shown commented out: a global "may" read as lowering AUTH relays (it does not).
    assert config.tls is None and config.cafile == str(tmp_path / "private-ca.pem")
    assert '\n# tls = "may" ' in EXAMPLE.read_text()
    assert config.chunking is True and config.allow_cleartext_auth is False
    assert config.retry.first == 300 and config.retry.lifetime == 5 * 86400
    assert config.retry.delay_warning == 4 * 3600
    assert config.timeouts["final"] == 600 and len(config.timeouts) == 11
    assert config.daemon.workers == 4 and config.daemon.poll == 30.0
    assert config.daemon.commit_interval == 0.2
    assert config.sendmail.delivery == "background"
    assert config.sendmail.force_sender == "noreply@example.com"
    assert config.submit[1] == SubmitRule(("webmaster@example.com",), group="www-data")
    assert config.routes["example.net"] == DomainRoute(
        relay=Relay("relay.example.net", 587),
        tls=TLSPolicy.VERIFY,
        auth=Auth("mxsend", "PLAIN", password_file=str(tmp_path / "relay.password")),
        concurrency=2,
        rate=Rate(100, 60.0),
    )
    assert config.routes[".corp.example.com"] == DomainRoute(tls=TLSPolicy.ENCRYPT)
    assert config.routes["gmail.com"] == DomainRoute(concurrency=4, rate=Rate(500, 3600.0))
    star = config.routes["*"]
    assert star.relay == Relay("smtp.example.com", 465) and star.relay.implicit_tls
    assert star.auth is not None and star.auth.mechanism == "XOAUTH2"
    assert star.auth.password_command == (
        str(tmp_path / "oauth2-token"),
        "--account",
        "me@example.com",
    )
    assert config.dkim == {
        "example.com": (
            DkimKeyConfig("mail2024", str(tmp_path / "dkim/example.com.mail2024.pem"), "rsa"),
            DkimKeyConfig("ed2024", str(tmp_path / "dkim/example.com.ed2024.pem"), "ed25519"),
        )
    }
    # Every key the schema knows is in the example, with what it means.
    raw = tomllib.loads(EXAMPLE.read_text().replace('\n# tls = "may" ', '\ntls = "may" '))
    assert set(raw) == set(SCHEMA[""]) == set(as_table(config)) | {"tls"}
    for section in ("retry", "timeouts", "daemon", "sendmail", "submit"):
        assert set(raw[section]) == set(SCHEMA[section]), section
    routes = raw["routes"].values()
    assert {k for r in routes for k in r} == set(SCHEMA["routes.*"])
    assert {k for r in routes for k in r.get("auth", {})} == set(SCHEMA["routes.*.auth"])
    assert {k for r in raw["submit"]["allow"] for k in r} == set(SCHEMA["submit.allow"])
    assert {k for d in raw["dkim"].values() for k in d[0]} == set(SCHEMA["dkim.*"])


def test_the_example_as_shipped_fails_only_for_its_absent_files() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLE)
    for problem in caught.value.problems:
        assert "cannot read" in problem.message or "no such program" in problem.message, problem
    assert len(caught.value.problems) == 5


def test_what_is_shown_reads_back_the_same(example: Path, tmp_path: Path) -> None:
    config = load_config(example)
    again = write(tmp_path, dump_toml(as_table(config)), "again.toml")
    assert load_config(again) == replace(config, path=str(again))
    assert load_config(write(tmp_path, dump_toml(as_table(Config())), "empty.toml")) == Config(
        path=str(tmp_path / "empty.toml")
    )


def test_redacted_hides_command_arguments_and_passwords(example: Path) -> None:
    config = load_config(example)
    star = config.redacted().routes["*"].auth
    assert star is not None and star.password_command is not None
    assert star.password_command[1:] == ("<redacted>",) and "me@example.com" not in str(
        star.password_command
    )
    text = dump_toml(as_table(config.redacted()))
    assert "--account" not in text and "<redacted>" in text
    given = Auth("u", password="hunter2")
    assert "hunter2" not in repr(given) and given.redacted().password == "<redacted>"
    assert config.redacted().routes["example.net"] == config.routes["example.net"]


def test_relative_and_home_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "sub").mkdir()
    secret_files(tmp_path / "sub")
    (tmp_path / "sub" / "pw").rename(tmp_path / "home" / "pw")
    text = (
        "queue_dir = 'spool'\n"
        "[routes.'*']\nvia = 'r.example'\nauth = { username = 'u', password_file = '~/pw' }\n"
        "[[dkim.'a.example']]\nselector = 's'\nkey_file = 'sub/key.pem'\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.queue_dir == str(tmp_path / "spool")
    auth = config.routes["*"].auth
    assert auth is not None and auth.password_file == str(tmp_path / "home" / "pw")
    assert config.dkim["a.example"][0].key_file == str(tmp_path / "sub" / "key.pem")


def test_small_forms(tmp_path: Path) -> None:
    secret_files(tmp_path)
    text = (
        "dns = '[::1]:5353'\n"
        "[retry]\ndelay_warning = 'off'\n"
        "[timeouts]\nconnect = 2.5\nrcpt = '1m'\n"
        "[routes.'Ä.example']\nvia = 'MX'\ntls = 'VERIFY'\n"
        "[routes.'.sub.example']\nvia = '[192.0.2.1]'\nrate = '10/30s'\n"
        "auth = { username = 'u', password_command = 'cat pw', mechanism = 'oauthbearer' }\n"
        "[dkim.'d.example']\nselector = 'a.b'\nkey_file = 'key.pem'\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.dns == ("::1", 5353) and config.retry.delay_warning == 0.0
    assert config.timeouts == {"connect": 2.5, "rcpt": 60.0}
    assert config.routes["xn--4ca.example"] == DomainRoute(tls=TLSPolicy.VERIFY)
    sub = config.routes[".sub.example"]
    assert sub.relay == Relay("192.0.2.1", 587) and sub.rate == Rate(10, 30.0)
    # The program as found now, not looked up in PATH again when it runs.
    cat = os.path.abspath(shutil.which("cat") or "cat")
    assert sub.auth == Auth("u", "OAUTHBEARER", password_command=(cat, "pw"))
    assert config.dkim["d.example"] == (DkimKeyConfig("a.b", str(tmp_path / "key.pem")),)
    same = "[routes.'a.example']\nvia = 'mx'\n[routes.'A.example']\nvia = 'mx'\n"
    assert one_problem(tmp_path, same)[1].startswith('routes."A.example": a second route')


def test_route_table_matching() -> None:
    mx = DomainRoute()
    relay = DomainRoute(relay=Relay("r.example"))
    table = RouteTable({"a.example": mx, ".a.example": relay, "*": relay})
    assert table.match("A.Example.") == ("a.example", mx)
    assert table.match("x.y.a.example") == (".a.example", relay)
    assert table.match("b.example") == ("*", relay)
    assert table.without_default().match("b.example") is None
    assert RouteTable({}).match("a.example") is None
    with pytest.raises(ValueError, match="only ever sent to a relay"):
        DomainRoute(auth=Auth("u", password="p"))
    with pytest.raises(ValueError, match="rate"):
        Rate(0, 60)
    assert str(Relay("::1", 465)) == "[::1]:465" and Relay("::1", 465).implicit_tls


def test_who_may_set_which_sender() -> None:
    alice = SubmitRule(("alice@example.com", "*@lists.example.com"), user="alice")
    web = SubmitRule(("<>",), group="www-data")
    root = SubmitRule(("*",), uid=0)
    config = Config(submit=(alice, web, root))

    def may(sender: str, user: str, uid: int = 1000, groups: tuple[str, ...] = ()) -> bool:
        return config.sender_allowed(sender, user=user, uid=uid, groups=groups)

    assert may("alice@EXAMPLE.com", "alice") and may("x@lists.example.com", "alice")
    assert not may("Alice@example.com", "alice")  # local parts are case-sensitive
    assert not may("bob@example.com", "alice") and not may("", "alice")
    assert may("", "www", groups=("www-data",)) and not may(
        "a@b.example", "www", groups=("www-data",)
    )
    assert may("", "root", uid=0) and may("any@where.example", "root", uid=0)
    assert not may("bob@example.com", "bob")
    assert not Config().sender_allowed("x@y.example", user="bob", uid=5, groups=())
    everyone = SubmitRule(("*@example.com",), user="*")
    assert everyone.applies_to("anyone", 7, ()) and everyone.allows("x@example.com")


def test_the_config_room_stays_pure(example: Path) -> None:
    # Importing it costs the standard library only; loading a file adds the pure rooms.
    code = (
        "import sys, mxsend.config\n"
        "assert not {'mxsend.protocol', 'mxsend.queue', 'twisted'} & set(sys.modules)\n"
        f"mxsend.config.load_config({str(example)!r})\n"
        "bad = {'twisted', 'OpenSSL', 'asyncio', 'ssl', 'socket'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_file_with_no_settings(tmp_path: Path) -> None:
    empty = write(tmp_path, "# nothing\n")
    assert load_config(empty) == Config(path=str(empty))
    assert load_config(empty).route_table() is None
