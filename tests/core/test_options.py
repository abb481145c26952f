"""Delivery options map one to one onto a TOML table, and refuse what they cannot use."""

from __future__ import annotations

import tomllib

import pytest

from mxsend.options import (
    STAGES,
    ConfigError,
    DeliveryOptions,
    Limits,
    Smarthost,
    Timeouts,
    TLSOptions,
)
from mxsend.routing import TLSPolicy

FULL = """
helo_name = "mail.example.com"
mx_port = 2525
chunking = false
allow_cleartext_auth = true

[tls]
policy = "verify"
cafile = "/etc/ssl/private-ca.pem"

[limits]
max_addresses = 4
max_sessions = 2
parallel = 3
connections = 2

[timeouts]
connect = 5
final = 12.5

[smarthost]
host = "relay.example.com"
port = 465
tls_on_connect = true
"""


def test_a_full_table_maps_onto_the_nested_types() -> None:
    options = DeliveryOptions.from_table(tomllib.loads(FULL))
    assert options == DeliveryOptions(
        "mail.example.com",
        mx_port=2525,
        chunking=False,
        allow_cleartext_auth=True,
        tls=TLSOptions(TLSPolicy.VERIFY, "/etc/ssl/private-ca.pem"),
        limits=Limits(max_addresses=4, max_sessions=2, parallel=3, connections=2),
        timeouts=Timeouts(connect=5, final=12.5),
        smarthost=Smarthost("relay.example.com", 465, tls_on_connect=True),
    )
    assert options.tls_policy is TLSPolicy.VERIFY


def test_the_table_round_trips() -> None:
    for text in (FULL, 'helo_name = "h.example"\n'):
        options = DeliveryOptions.from_table(tomllib.loads(text))
        assert DeliveryOptions.from_table(options.as_table()) == options


def test_defaults_are_the_api_defaults() -> None:
    options = DeliveryOptions.from_table({"helo_name": "h.example"})
    assert options == DeliveryOptions("h.example")
    assert options.tls_policy is TLSPolicy.MAY  # MX delivery: opportunistic
    smarthost = DeliveryOptions.from_table({"helo_name": "h", "smarthost": {"host": "r.example"}})
    assert smarthost.tls_policy is TLSPolicy.VERIFY  # a relay gets credentials: verify it
    assert smarthost.smarthost == Smarthost("r.example", 587)
    assert set(Timeouts().as_dict()) == set(STAGES)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "helo_name: missing"),
        ({"helo_name": "h", "helo": "x"}, "helo: unknown setting"),
        ({"helo_name": 3}, "helo_name: expected a string, got 3"),
        ({"helo_name": "h", "mx_port": "25"}, "mx_port: expected an integer"),
        ({"helo_name": "h", "mx_port": True}, "mx_port: expected an integer"),
        ({"helo_name": "h", "mx_port": 70000}, "mx_port: not a port number"),
        ({"helo_name": "h", "chunking": 1}, "chunking: expected true or false"),
        ({"helo_name": "h", "tls": "verify"}, "tls: expected a table"),
        ({"helo_name": "h", "tls": {"policy": "strict"}}, "tls.policy: expected one of none"),
        ({"helo_name": "h", "tls": {"ca": "x"}}, "tls.ca: unknown setting"),
        ({"helo_name": "h", "limits": {"parallel": 0}}, "limits.parallel: expected a positive"),
        ({"helo_name": "h", "limits": {"parallel": 2.5}}, "limits.parallel: expected an integer"),
        ({"helo_name": "h", "timeouts": {"conect": 3}}, "timeouts.conect: unknown setting"),
        ({"helo_name": "h", "timeouts": {"connect": 0}}, "timeouts.connect: seconds must be"),
        ({"helo_name": "h", "timeouts": {"data": float("inf")}}, "timeouts.data: seconds"),
        ({"helo_name": "h", "timeouts": {"data": False}}, "timeouts.data: expected a number"),
        ({"helo_name": "h", "smarthost": {"port": 25}}, "smarthost.host: missing"),
        ({"helo_name": "h", "smarthost": {"host": "r", "port": 0}}, "smarthost.port: not a port"),
        ({"helo_name": "h", "smarthost": {"host": "r", "user": "u"}}, "smarthost.user: unknown"),
    ],
)
def test_a_bad_setting_is_named_on_one_line(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        DeliveryOptions.from_table(table)
    text = str(caught.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_limits_refuse_nonsense_from_the_api_too() -> None:
    with pytest.raises(ConfigError, match=r"limits\.connections"):
        Limits(connections=0)
