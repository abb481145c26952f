"""The schema: each section of the file checked into its frozen value (see
``examples/mxsend.toml`` for what every key means)."""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import shutil
from collections.abc import Callable, Mapping
from typing import Any

from mxsend.config._check import Checker
from mxsend.config._lines import KeyPath
from mxsend.config._schema import (
    DELIVERY_MODES,
    DKIM_ALGORITHMS,
    LOG_FORMATS,
    Config,
    DaemonSettings,
    DkimKeyConfig,
    RetrySettings,
    SendmailSettings,
    SubmitRule,
)
from mxsend.options import STAGES
from mxsend.queue._schedule import RetryPolicy, parse_duration
from mxsend.routing._table import (
    AUTH_MECHANISMS,
    Auth,
    DomainRoute,
    Rate,
    Relay,
    secret_file_problem,
)

__all__ = ["SCHEMA", "ConfigChecker"]

#: Deadlines and polls, like --timeout's (mxsend.options).
MAX_SECONDS = 86400.0
#: The longest a delivery record may wait for its group commit.
MAX_COMMIT_INTERVAL = 60.0

_TOP = (
    "hostname", "sender", "domain", "queue_dir", "log_format", "dns", "mx_port", "tls",
    "cafile", "chunking", "allow_cleartext_auth", "retry", "timeouts", "daemon", "sendmail",
    "submit", "routes", "dkim",
)  # fmt: skip
_RETRY = ("first", "max", "lifetime", "bounce_lifetime", "delay_warning")
_DAEMON = (
    "workers", "connections", "processes", "poll", "grace", "submit_socket", "commit_interval",
)  # fmt: skip
_SENDMAIL = ("delivery", "undisclosed_recipients", "force_sender", "masquerade_domain")
_RULE = ("user", "uid", "group", "senders")
_ROUTE = ("via", "tls", "auth", "concurrency", "rate")
_AUTH = ("username", "mechanism", "password_file", "password_command")
_DKIM = ("selector", "key_file", "algorithm")
#: Every key each table may hold, by the table's place ("" the top; "routes.*" each route).
SCHEMA: dict[str, tuple[str, ...]] = {
    "": _TOP, "retry": _RETRY, "timeouts": tuple(STAGES), "daemon": _DAEMON,
    "sendmail": _SENDMAIL, "submit": ("allow",), "submit.allow": _RULE, "routes.*": _ROUTE,
    "routes.*.auth": _AUTH, "dkim.*": _DKIM,
}  # fmt: skip
_RATE = re.compile(r"\s*([0-9]+)\s*/\s*(\S+)\s*")


class ConfigChecker(Checker):
    """The whole file: :meth:`config` checks a parsed document."""

    def config(self, data: Mapping[str, Any]) -> Config:
        top = self.table((), dict(data), _TOP)
        path: KeyPath = ()
        values: dict[str, Any] = {
            "hostname": self.each(path, top, "hostname", self.domain),
            "sender": self.each(path, top, "sender", self.address),
            "domain": self.each(path, top, "domain", self.domain),
            "queue_dir": self.each(path, top, "queue_dir", self.location),
            "log_format": self.each(path, top, "log_format", self.one_of(LOG_FORMATS)),
            "dns": self.each(path, top, "dns", self.dns),
            "mx_port": self.each(path, top, "mx_port", self.between(1, 65535)),
            "tls": self.each(path, top, "tls", self.policy),
            "cafile": self.each(path, top, "cafile", self.readable),
            "chunking": self.each(path, top, "chunking", self.boolean),
            "allow_cleartext_auth": self.each(path, top, "allow_cleartext_auth", self.boolean),
        }  # fmt: skip
        sections: dict[str, Callable[[KeyPath, Any], Any]] = {
            "retry": self.retry, "timeouts": self.timeouts, "daemon": self.daemon,
            "sendmail": self.sendmail, "submit": self.submit, "routes": self.routes,
            "dkim": self.dkim,
        }  # fmt: skip
        for key, check in sections.items():
            if key in top:
                values[key] = check((key,), top[key])
        return Config(self.file, **{k: v for k, v in values.items() if v is not None})

    def dns(self, path: KeyPath, value: object) -> tuple[str, int] | None:
        found = self.host_port(
            path, value, 53, 'an IP address with an optional port ("127.0.0.1:53")'
        )
        if found is None:
            return None
        try:
            ipaddress.ip_address(found[0])
        except ValueError:
            self.expected(path, 'an IP address, not a name ("127.0.0.1:53")', value)
            return None
        return found

    def retry(self, path: KeyPath, value: object) -> RetrySettings:
        table = self.table(path, value, _RETRY)
        spans = {key: self.each(path, table, key, self.duration) for key in _RETRY[:4]}
        warning = None
        if "delay_warning" in table:
            raw = table["delay_warning"]
            off = isinstance(raw, str) and raw.strip().lower() == "off"
            warning = 0.0 if off else self.duration((*path, "delay_warning"), raw, allow_zero=True)
        checked = {**spans, "delay_warning": warning}
        if all(checked[key] is not None for key in table):
            # The spans must also agree with each other (and with the defaults of the rest).
            given = {("maximum" if k == "max" else k): v for k, v in spans.items() if v is not None}
            try:
                RetryPolicy(**given, delay_warning=warning or None)
            except ValueError as exc:
                self.error(path, str(exc).replace("retry policy ", ""))
        return RetrySettings(**spans, delay_warning=warning)

    def timeouts(self, path: KeyPath, value: object) -> dict[str, float]:
        table = self.table(path, value, list(STAGES))
        found = {
            key: self.duration((*path, key), item, most=MAX_SECONDS) for key, item in table.items()
        }
        return {key: seconds for key, seconds in found.items() if seconds is not None}

    def daemon(self, path: KeyPath, value: object) -> DaemonSettings:
        table = self.table(path, value, _DAEMON)

        def seconds(p: KeyPath, v: object) -> float | None:
            return self.duration(p, v, most=MAX_SECONDS)

        def interval(p: KeyPath, v: object) -> float | None:
            return self.duration(p, v, most=MAX_COMMIT_INTERVAL, allow_zero=True)

        return DaemonSettings(
            workers=self.each(path, table, "workers", self.between(1, 1000)),
            connections=self.each(path, table, "connections", self.between(1, 1000)),
            processes=self.each(path, table, "processes", self.between(1, 64)),
            poll=self.each(path, table, "poll", seconds),
            grace=self.each(path, table, "grace", seconds),
            submit_socket=self.each(path, table, "submit_socket", self.socket_path),
            commit_interval=self.each(path, table, "commit_interval", interval),
        )

    def socket_path(self, path: KeyPath, value: object) -> str | None:
        if value == "":
            return ""  # no socket
        if isinstance(value, str) and os.path.isabs(value) and "\0" not in value:
            return value
        self.expected(path, 'an absolute path, or "" for no submission socket', value)
        return None

    def sendmail(self, path: KeyPath, value: object) -> SendmailSettings:
        table = self.table(path, value, _SENDMAIL)
        return SendmailSettings(
            delivery=self.each(path, table, "delivery", self.one_of(DELIVERY_MODES)),
            undisclosed_recipients=self.each(path, table, "undisclosed_recipients", self.boolean),
            force_sender=self.each(path, table, "force_sender", self.address),
            masquerade_domain=self.each(path, table, "masquerade_domain", self.domain),
        )  # fmt: skip

    def submit(self, path: KeyPath, value: object) -> tuple[SubmitRule, ...]:
        table = self.table(path, value, ("allow",))
        if "allow" not in table:
            return ()
        rules = table["allow"]
        where = (*path, "allow")
        if not isinstance(rules, list):
            self.expected(where, "an array of tables ([[submit.allow]])", rules)
            return ()
        found = (self.rule((*where, i), rule) for i, rule in enumerate(rules))
        return tuple(rule for rule in found if rule is not None)

    def rule(self, path: KeyPath, value: object) -> SubmitRule | None:
        table = self.table(path, value, _RULE)
        who = [key for key in ("user", "uid", "group") if key in table]
        if len(who) != 1:
            also = f", not {' and '.join(who)}" if who else ""
            self.error(path, f"give exactly one of user, uid or group{also}")
        checked: dict[str, Any] = {
            "user": self.each(path, table, "user", self.text),
            "uid": self.each(path, table, "uid", self.between(0, 2**32 - 2)),
            "group": self.each(path, table, "group", self.text),
        }
        senders = self.each(path, table, "senders", self.senders)
        if "senders" not in table:
            self.error(
                path, 'missing senders (patterns: "*", "*@example.com", "a@example.com", "<>")'
            )
        if len(who) != 1 or senders is None or checked[who[0]] is None:
            return None
        return SubmitRule(senders, **checked)

    def senders(self, path: KeyPath, value: object) -> tuple[str, ...] | None:
        if not isinstance(value, list) or not value:
            self.expected(path, "a non-empty array of sender patterns", value)
            return None
        out = []
        for index, item in enumerate(value):
            where = (*path, index)
            if item in ("*", "<>"):
                out.append(item)
            elif isinstance(item, str) and item.startswith("*@"):
                domain = self.domain(where, item[2:])
                out.append(f"*@{domain}" if domain else "")
            else:
                out.append(self.address(where, item) or "")
        return tuple(out) if all(out) else None

    def routes(self, path: KeyPath, value: object) -> dict[str, DomainRoute]:
        out: dict[str, DomainRoute] = {}
        for key, item in self.mapping(path, value).items():
            where = (*path, key)
            name = self.route_key(where, key)
            route = self.route(where, item)
            if name is None or route is None:
                continue
            if name in out:
                self.error(where, f"a second route for {name!r} (keys are not case-sensitive)")
            out[name] = route
        return out

    def route_key(self, path: KeyPath, key: str) -> str | None:
        if key == "*":
            return key
        if key.startswith("."):
            domain = self.domain(path, key[1:])
            return None if domain is None else "." + domain
        return self.domain(path, key)

    def route(self, path: KeyPath, value: object) -> DomainRoute | None:
        table = self.table(path, value, _ROUTE)
        checked: dict[str, Any] = {
            "via": self.each(path, table, "via", self.via),
            "tls": self.each(path, table, "tls", self.policy),
            "auth": self.each(path, table, "auth", self.auth),
            "concurrency": self.each(path, table, "concurrency",
                                     self.between(1, 1000)),
            "rate": self.each(path, table, "rate", self.rate),
        }  # fmt: skip
        relay = checked.pop("via")
        if "auth" in table and (relay is False or "via" not in table):
            # Credentials only ever go to the relay they are for, never to MX hosts.
            self.error((*path, "auth"), 'AUTH is only sent to a relay: give via = "[host]:port"')
            return None
        if any(
            key in table and (relay if key == "via" else checked[key]) is None for key in _ROUTE
        ):
            return None
        return DomainRoute(relay=relay or None, **checked)

    def via(self, path: KeyPath, value: object) -> Relay | bool | None:
        """A relay, or False for "mx" (the domain's MX hosts); None when bad."""
        if isinstance(value, str) and value.strip().lower() == "mx":
            return False
        found = self.host_port(path, value, 587, '"mx" or a relay as "[host]:port"')
        return None if found is None else Relay(*found)

    def auth(self, path: KeyPath, value: object) -> Auth | None:
        table = self.table(path, value, _AUTH)
        username = self.each(path, table, "username", self.text)
        if "username" not in table:
            self.error(path, "missing username")
        mechanism = self.each(path, table, "mechanism", self.one_of(AUTH_MECHANISMS))
        sources = [key for key in ("password_file", "password_command") if key in table]
        if len(sources) != 1:
            self.error(
                path, "give password_file or password_command" + (", not both" if sources else "")
            )
        password_file = self.each(path, table, "password_file", self.secret_file)
        command = self.each(path, table, "password_command", self.command)
        if username is None or len(sources) != 1 or (password_file or command) is None:
            return None
        if "mechanism" in table and mechanism is None:
            return None
        return Auth(username, mechanism or "PLAIN", password_file, command)

    def secret_file(self, path: KeyPath, value: object) -> str | None:
        """A readable file only its owner (and its group, reading) may touch."""
        where = self.readable(path, value)
        if where is None:
            return None
        try:
            problem = secret_file_problem(os.stat(where).st_mode)
        except OSError as exc:
            problem = f"cannot be read: {exc.strerror}"
        if problem is not None:
            self.error(path, f"{where} {problem}")
            return None
        return where

    def command(self, path: KeyPath, value: object) -> tuple[str, ...] | None:
        """A program and its arguments: an array of strings, or one string split as a
        shell would split words (but run with no shell). The program is kept as the
        absolute path found now, so that PATH at run time cannot change it."""
        what = 'a command: ["program", "arg", ...] or "program arg ..."'
        argv: list[str] | None = None
        if isinstance(value, str):
            try:
                argv = shlex.split(value)
            except ValueError as exc:
                self.error(path, f"expected {what}: {exc}")
                return None
        elif isinstance(value, list) and all(isinstance(a, str) for a in value):
            argv = list(value)
        if not argv or not all(argv) or any("\0" in a for a in argv):
            self.expected(path, what, value)
            return None
        program = os.path.expanduser(argv[0])
        if "/" in program and not os.path.isabs(program):
            program = os.path.normpath(self.base.absolute() / program)
        found = shutil.which(program)
        if found is None:
            self.error(path, f"no such program: {argv[0]} (not found, or not executable)")
            return None
        return (os.path.abspath(found), *argv[1:])

    def rate(self, path: KeyPath, value: object) -> Rate | None:
        what = 'a rate: messages per time, like "100/m", "10/30s" or "5000/d"'
        found = _RATE.fullmatch(value) if isinstance(value, str) else None
        if found is None:
            self.expected(path, what, value)
            return None
        per = found.group(2)
        try:
            seconds = parse_duration(f"1{per}" if per.isalpha() else per)
        except ValueError as exc:
            self.error(path, f"expected {what}: {exc}")
            return None
        count = int(found.group(1))
        if count < 1:
            self.expected(path, f"{what}, at least 1 message", value)
            return None
        return Rate(count, seconds)

    def dkim(self, path: KeyPath, value: object) -> dict[str, tuple[DkimKeyConfig, ...]]:
        out: dict[str, tuple[DkimKeyConfig, ...]] = {}
        for key, item in self.mapping(path, value).items():
            where = (*path, key)
            domain = self.domain(where, key)
            entries = item if isinstance(item, list) else [item]
            found = [self.dkim_key((*where, i) if isinstance(item, list) else where, e, domain)
                     for i, e in enumerate(entries)]  # fmt: skip
            keys = tuple(k for k in found if k is not None)
            selectors = [k.selector for k in keys]
            for selector in {s for s in selectors if selectors.count(s) > 1}:
                self.error(where, f"selector {selector!r} given twice")
            if domain is not None and len(keys) == len(found):
                if domain in out:
                    self.error(where, f"a second [dkim] entry for {domain!r}")
                out[domain] = keys
        return out

    def dkim_key(self, path: KeyPath, value: object, domain: str | None) -> DkimKeyConfig | None:
        """One key, checked as signing loads it (mxsend.dkim): a key file that send would
        refuse (open to others, not a key of its type) is a problem here, on its line."""
        table = self.table(path, value, _DKIM)
        for key in ("selector", "key_file"):
            if key not in table:
                self.error(path, f"missing {key}")
        selector = self.each(path, table, "selector", self.domain)
        key_file = self.each(path, table, "key_file", self.readable)
        algorithm = self.each(path, table, "algorithm", self.one_of(DKIM_ALGORITHMS))
        if selector is None or key_file is None or ("algorithm" in table and algorithm is None):
            return None
        if domain is not None:
            from mxsend.dkim import DkimError, DkimKey  # noqa: PLC0415 - only with [dkim]

            try:
                DkimKey.check_file(key_file, domain=domain, selector=selector,
                                   algorithm=algorithm or "rsa")  # fmt: skip
            except DkimError as exc:
                self.error((*path, "key_file"), str(exc))
                return None
        return DkimKeyConfig(selector, key_file, algorithm or "rsa")
