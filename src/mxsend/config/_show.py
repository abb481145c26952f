"""Settings as a TOML-shaped table, and that table written as TOML that reads back."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from mxsend.config._lines import KeyPath
from mxsend.config._schema import Config

__all__ = ["as_table", "dump_toml", "merge"]


def _number(seconds: float) -> int | float:
    return int(seconds) if float(seconds).is_integer() else seconds


def _duration(seconds: float) -> str:
    from mxsend.queue._schedule import format_duration  # noqa: PLC0415 - keeps import cheap

    return format_duration(seconds)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _set(table: dict[str, Any], key: str, value: object) -> None:
    if value is not None and value not in ({}, []):
        table[key] = value


def as_table(config: Config) -> dict[str, Any]:
    """What ``config`` sets, as the table a TOML file would hold (a config file with this
    content loads back to equal settings). Secrets are as ``config`` holds them: call
    :meth:`Config.redacted` first to show them."""
    out: dict[str, Any] = {}
    for key in ("hostname", "sender", "domain", "queue_dir", "log_format", "mx_port", "cafile",
                "chunking", "allow_cleartext_auth"):  # fmt: skip
        _set(out, key, getattr(config, key))
    _set(out, "dns", None if config.dns is None else _host_port(*config.dns))
    _set(out, "tls", None if config.tls is None else config.tls.value)
    retry = config.retry
    spans = {"first": retry.first, "max": retry.max, "lifetime": retry.lifetime,
             "bounce_lifetime": retry.bounce_lifetime}  # fmt: skip
    table = {k: _duration(v) for k, v in spans.items() if v is not None}
    if retry.delay_warning is not None:
        table["delay_warning"] = _duration(retry.delay_warning) if retry.delay_warning else "off"
    _set(out, "retry", table)
    _set(out, "timeouts", {k: _number(v) for k, v in config.timeouts.items()})
    daemon = config.daemon
    table = {
        k: getattr(daemon, k) for k in ("workers", "connections", "processes", "submit_socket")
    }
    table |= {
        k: _duration(v)
        for k in ("poll", "grace", "commit_interval")
        if (v := getattr(daemon, k)) is not None
    }
    _set(out, "daemon", {k: v for k, v in table.items() if v is not None})
    sendmail = config.sendmail
    names = ("delivery", "undisclosed_recipients", "force_sender", "masquerade_domain")
    _set(
        out,
        "sendmail",
        {k: getattr(sendmail, k) for k in names if getattr(sendmail, k) is not None},
    )
    rules = []
    for rule in config.submit:
        who = {
            k: getattr(rule, k) for k in ("user", "uid", "group") if getattr(rule, k) is not None
        }
        rules.append({**who, "senders": list(rule.senders)})
    _set(out, "submit", {"allow": rules} if rules else None)
    _set(out, "routes", {key: _route(route) for key, route in config.routes.items()})
    _set(out, "dkim", {
        domain: [{"selector": k.selector, "key_file": k.key_file, "algorithm": k.algorithm}
                 for k in keys]
        for domain, keys in config.dkim.items()
    })  # fmt: skip
    return out


def _route(route: Any) -> dict[str, Any]:
    table: dict[str, Any] = {"via": "mx" if route.relay is None else str(route.relay)}
    _set(table, "tls", None if route.tls is None else route.tls.value)
    _set(table, "concurrency", route.concurrency)
    if route.rate is not None:
        table["rate"] = f"{route.rate.count}/{_duration(route.rate.seconds)}"
    auth = route.auth
    if auth is not None:
        table["auth"] = {"username": auth.username, "mechanism": auth.mechanism}
        _set(table["auth"], "password_file", auth.password_file)
        command = auth.password_command
        _set(table["auth"], "password_command", None if command is None else list(command))
    return table


def merge(defaults: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` over ``defaults``, table by table."""
    out = dict(defaults)
    for key, value in settings.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _key(name: str) -> str:
    return name if _BARE.fullmatch(name) else _string(name)


def _string(text: str) -> str:
    # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _tables(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def dump_toml(table: Mapping[str, Any], *, notes: Mapping[KeyPath, str] | None = None) -> str:
    """``table`` as TOML: keys first, then subtables, then arrays of tables. A key whose
    path is in ``notes`` gets that note as a comment after its value."""
    lines: list[str] = []
    _write(lines, (), table, notes or {})
    return "\n".join(lines).strip("\n") + "\n"


def _write(
    lines: list[str], path: KeyPath, table: Mapping[str, Any], notes: Mapping[KeyPath, str]
) -> None:
    name = ".".join(_key(str(p)) for p in path)
    plain = {k: v for k, v in table.items() if not isinstance(v, Mapping) and not _tables(v)}
    if plain and path:
        lines += ["", f"[{name}]"]
    for key, value in plain.items():
        note = notes.get((*path, key))
        lines.append(f"{_key(key)} = {_value(value)}" + (f"  # {note}" if note else ""))
    for key, value in table.items():
        if isinstance(value, Mapping):
            _write(lines, (*path, key), value, notes)
    for key, value in table.items():
        if _tables(value):
            header = ".".join(_key(str(p)) for p in (*path, key))
            for item in value:
                lines += ["", f"[[{header}]]"]
                lines += [f"{_key(inner)} = {_value(v)}" for inner, v in item.items()]
