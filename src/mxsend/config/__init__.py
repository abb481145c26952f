"""The config file: ``mxsend.toml``, its schema as small frozen values, loading with
``FILE:LINE`` errors.

Which file: ``--config FILE``, else ``$MXSEND_CONFIG``, else ``/etc/mxsend/mxsend.toml`` for
root and ``$XDG_CONFIG_HOME/mxsend/mxsend.toml`` for others (:func:`find_config`). A default
file that does not exist is an empty config; a named one must be readable. Options given
on the command line win over the file, and the file over the built-in defaults.

::

    hostname = "mail.example.com"      # EHLO name, Reporting-MTA      (--helo)
    sender = "bounces@example.com"     # default envelope sender      (--from)
    domain = "example.com"             # for bare local names
    queue_dir = "/var/spool/mxsend"    #                              (--queue-dir)
    log_format = "text"                # or "json"                    (--log-format)
    dns = "127.0.0.1:53"               #                              (--dns)
    mx_port = 25                       #                              (--mx-port)
    tls = "may"                        # routes that set none, no AUTH (--tls)
    cafile = "/etc/ssl/extra-ca.pem"   #                              (--cafile)
    chunking = true                    #                              (--no-chunking)
    allow_cleartext_auth = false       #                              (--allow-cleartext-auth)
    [retry]       first, max, lifetime, bounce_lifetime, delay_warning: durations ("5m", "5d")
    [timeouts]    connect, greeting, ... quit: seconds or durations   (--timeout)
    [daemon]      workers, connections, processes, poll, grace, commit_interval
    [sendmail]    delivery ("background" | "interactive" | "queue"), undisclosed_recipients,
                  force_sender, masquerade_domain
    [[submit.allow]]        user | uid | group, senders = ["*@example.com", ...]
    [routes."example.com"]  via = "[relay]:587" | "mx", tls, concurrency, rate = "100/m",
                            auth = {username, mechanism, password_file | password_command}
    [[dkim."example.com"]]  selector, key_file, algorithm ("rsa" | "ed25519")

``examples/mxsend.toml`` shows and explains every key. Pure: importing this module imports
only the standard library; loading a file also imports the pure rooms (protocol, routing,
queue) for their validators, never Twisted.
"""

from typing import TYPE_CHECKING

from mxsend.config._lines import KeyPath, dotted, key_lines
from mxsend.config._load import (
    SYSTEM_CONFIG,
    ConfigError,
    Problem,
    default_config_path,
    find_config,
    load_config,
)
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
from mxsend.config._show import as_table, dump_toml, merge

if TYPE_CHECKING:
    from mxsend.config._sections import SCHEMA


def __getattr__(name: str) -> object:
    # The schema's key lists live beside the checks, which import the pure rooms: only
    # when asked for, so that importing this package stays cheap.
    if name == "SCHEMA":
        from mxsend.config._sections import SCHEMA  # noqa: PLC0415

        return SCHEMA
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DELIVERY_MODES",
    "DKIM_ALGORITHMS",
    "LOG_FORMATS",
    "SCHEMA",
    "SYSTEM_CONFIG",
    "Config",
    "ConfigError",
    "DaemonSettings",
    "DkimKeyConfig",
    "KeyPath",
    "Problem",
    "RetrySettings",
    "SendmailSettings",
    "SubmitRule",
    "as_table",
    "default_config_path",
    "dotted",
    "dump_toml",
    "find_config",
    "key_lines",
    "load_config",
    "merge",
]
