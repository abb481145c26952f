"""Exit statuses, from sysexits.h (as sendmail and msmtp use them)."""

from __future__ import annotations

import enum

__all__ = ["Exit"]


class Exit(enum.IntEnum):
    OK = 0
    USAGE = 64  #: command line usage error
    DATAERR = 65  #: bad message or address
    NOINPUT = 66  #: input file missing or unreadable
    UNAVAILABLE = 69  #: every failure was permanent
    SOFTWARE = 70  #: internal error
    CANTCREAT = 73  #: a file or directory (the queue) cannot be created or used
    TEMPFAIL = 75  #: some recipient deferred: try again later
    NOPERM = 77  #: not allowed (an envelope sender this user may not use)
    CONFIG = 78  #: bad configuration
