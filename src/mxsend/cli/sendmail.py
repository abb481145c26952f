"""``mxsend-sendmail``: the sendmail command line, for the programs that send mail by running
``sendmail`` (cron, mail(1), PHP's ``mail()``, git send-email).

Postfix's letter set. The message on standard input is made durable in the queue before
anything else: exit 0 once it is safe, 75 only when it could not be queued (and then nothing
is). Then, by default (``-odb``), the daemon serving the queue is woken, or when none does, a
one-shot ``mxsend queue run`` is started in the background; ``-odi`` runs it in the foreground
and ``-odq`` only queues. Under the name ``mailq`` it lists the queue (``-bp``); under
``newaliases`` it says there is nothing to rebuild.

On submission (RFC 5322) Date, Message-ID and From are added when missing, Bcc fields are
removed, and the header fields that carry addresses must parse (exit 65 naming the field);
the rest of the message is left as it was.

A plain submission takes the lean path (:mod:`mxsend.cli._drop`): this module and that one
import nothing but ``os``, ``sys``, ``time`` and ``pwd``, so that a submission costs little
more than starting Python. Everything else goes to the full path (:mod:`mxsend.cli._submit`).
"""

from __future__ import annotations

import io
import os
import sys

from mxsend import _queuefiles
from mxsend.cli import _drop

TYPE_CHECKING = False  # typing costs an import; mypy takes this name as True
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import BinaryIO

    from mxsend.dkim import DkimKey

__all__ = ["SUBMIT_SOCKET", "Refusal", "SendmailArgs", "main", "parse"]

# sysexits.h (mxsend._exits.Exit, whose enum costs an import here).
_OK, _USAGE, _DATAERR, _NOINPUT, _TEMPFAIL, _NOPERM, _CONFIG = 0, 64, 65, 66, 75, 77, 78
#: Where the daemon takes submissions from users who cannot write its queue.
SUBMIT_SOCKET = "/run/mxsend/submit.sock"
# Letters that take a value, attached (-fADDR) or as the next argument (-f ADDR).
_VALUED = set("BCFLNORVXfhr")
# Known sendmail letters with nothing to do here: accepted, and named on stderr with -v.
_IGNORED = set("GIUmn") | {"B", "L", "O", "X", "h"}
_MODES = {"m": "deliver", "p": "list", "s": "smtp", "i": "newaliases"}
_DELIVERY = {"b": "background", "i": "interactive", "q": "queue", "d": "background"}
_READ = 65536


class Refusal(Exception):
    """A submission refused: one line for standard error, and a sysexits status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class SendmailArgs:
    """What a sendmail command line asks for."""

    __slots__ = (
        "config", "delivery", "dot_ends", "envid", "from_headers", "full_name", "ignored",
        "mode", "notify", "queue_dir", "recipients", "ret", "run_queue", "sender", "smtputf8",
        "verbose",
    )  # fmt: skip

    def __init__(self) -> None:
        self.recipients: list[str] = []
        self.sender: str | None = None  #: -f/-r; "" is the null sender <>
        self.full_name: str | None = None  #: -F
        self.from_headers = False  #: -t
        self.dot_ends = True  #: a line with only "." ends the input, unless -i / -oi
        self.mode = "deliver"  #: -bm, -bp, -bs, -bi
        self.delivery: str | None = None  #: -odb, -odi, -odq; else the config's, else -odb
        self.run_queue: str | None = None  #: -q (""), -qR..., -qS...
        self.notify: str | None = None  #: -N
        self.ret: str | None = None  #: -R
        self.envid: str | None = None  #: -V
        self.verbose = False
        self.ignored: list[str] = []
        self.queue_dir: str | None = None  #: the default queue when None
        self.config: str | None = None  #: -C FILE
        self.smtputf8 = False  #: a -bs message that came with SMTPUTF8


def parse(argv: Sequence[str]) -> SendmailArgs:
    """The sendmail command line ``argv`` (without the program name), as getopt reads it;
    a Refusal (64) for an unknown letter or a missing value."""
    args = SendmailArgs()
    rest = list(argv)
    while rest:
        word = rest.pop(0)
        if word == "--":
            args.recipients += rest
            break
        if not word.startswith("-") or word == "-":
            args.recipients.append(word)
            continue
        cluster = word[1:]
        while cluster:
            letter, cluster = cluster[0], cluster[1:]
            if letter in _VALUED:
                if not cluster:
                    if not rest:
                        raise Refusal(_USAGE, f"option -{letter} needs a value")
                    cluster = rest.pop(0)
                _valued(args, letter, cluster)
                break
            if letter == "o":  # getopt's "o:": "-o i" is "-oi"
                if not cluster:
                    if not rest:
                        raise Refusal(_USAGE, "option -o needs a value")
                    cluster = rest.pop(0)
                _option(args, cluster)
                break
            if letter == "b":
                if cluster[:1] not in _MODES:
                    raise Refusal(_USAGE, f"-b{cluster[:1]}: mode not supported")
                args.mode = _MODES[cluster[:1]]
                cluster = cluster[1:]
            elif letter == "q":
                args.run_queue = cluster
                break
            elif letter == "t":
                args.from_headers = True
            elif letter == "i":
                args.dot_ends = False
            elif letter == "v":
                args.verbose = True
            elif letter in _IGNORED:
                args.ignored.append(f"-{letter}")
            else:
                raise Refusal(_USAGE, f"unknown option -{letter}")
    return args


def _valued(args: SendmailArgs, letter: str, value: str) -> None:
    if letter in ("f", "r"):
        # cron and others pass -f '<>' (or "") for the null sender; <addr> is addr.
        if value.startswith("<") and value.endswith(">"):
            value = value[1:-1]
        if "<" in value or ">" in value:
            raise Refusal(_DATAERR, f"-{letter} {value!r} is not an address")
        args.sender = value
    elif letter == "F":
        if not value.isprintable():  # a CR or LF would start a header field of its own
            raise Refusal(_USAGE, "-F: the full name must be one line of printable text")
        args.full_name = value
    elif letter == "N":
        args.notify = value
    elif letter == "R":
        args.ret = value
    elif letter == "V":
        args.envid = value
    elif letter == "C":  # sendmail's -C: the configuration file to use
        args.config = value
    else:
        args.ignored.append(f"-{letter} {value}")


def _option(args: SendmailArgs, option: str) -> None:
    """``-oX...``: -oi (dots), -od[biq] (delivery mode); the rest (-oem, -oA...) ignored."""
    if option == "i":
        args.dot_ends = False
    elif option[:1] == "d" and option[1:2] in _DELIVERY:
        args.delivery = _DELIVERY[option[1:2]]
    else:
        args.ignored.append(f"-o{option}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run as sendmail (or as ``mailq``/``newaliases``, by the name it is called by)."""
    argv = sys.argv if argv is None else argv
    name = os.path.basename(argv[0]) if argv else "sendmail"
    try:
        return _run(name, argv[1:])
    except Refusal as exc:
        sys.stderr.write(f"{name}: {exc}\n")
        return exc.status
    except KeyboardInterrupt:
        # Interrupted once the message was in the queue: it is safe, and 75 would make the
        # caller send it again.
        return _OK if _drop.queued_ids else _TEMPFAIL


def _run(name: str, argv: Sequence[str]) -> int:
    if name == "newaliases":
        return _newaliases()
    args = parse(argv)
    if name == "mailq":
        args.mode = "list"
    if args.verbose and args.ignored:
        sys.stderr.write(f"mxsend: ignored: {' '.join(args.ignored)}\n")
    if args.mode == "newaliases":
        return _newaliases()
    if args.mode == "list":
        return _mxsend(["queue", "list"])
    if args.mode == "smtp":
        return smtp_session(args)
    if args.run_queue is not None:
        return _mxsend(["queue", "run", *_queue_selection(args.run_queue)])
    stdin = sys.stdin.buffer if sys.stdin is not None else None
    if stdin is None:
        raise Refusal(_NOINPUT, "no standard input to read the message from")
    return submit(args, stdin)


def smtp_session(args: SendmailArgs) -> int:
    """``-bs``: SMTP on standard input and output (:mod:`mxsend.cli._bs`); each message
    accepted is queued by the full path before its 250, and delivery starts once at the end
    as ``args.delivery`` says."""
    from mxsend._exits import Exit
    from mxsend.cli._bs import Submission, serve
    from mxsend.cli._common import UserError

    settings = configured(args)
    host = settings.hostname or host_name()
    own = own_address(settings.rewrite.domain or host)
    via = _submission_socket(args)
    root = args.queue_dir or _queuefiles.default_queue_dir(os.environ)
    queued: list[str] = []  #: the ids queued here (not by the daemon, which delivers its own)

    def submit(message: Submission) -> str:
        each = SendmailArgs()
        each.sender = message.sender or ""  # the null sender <> stays null
        each.recipients = list(message.recipients)
        each.dot_ends = False  # SMTP's own dot has ended it already
        each.smtputf8 = message.smtputf8
        each.queue_dir = root
        each.config = args.config
        try:
            queue_id, by_daemon = _full(
                each, message.content, host=host, own=own, via=via, settings=settings
            )
        except Refusal as exc:  # as serve() takes it: its status says 4xx or 5xx
            raise UserError(Exit(exc.status), str(exc)) from None
        if not by_daemon:
            queued.append(queue_id)
        return queue_id

    if sys.stdin is None or sys.stdout is None:
        raise Refusal(_NOINPUT, "-bs needs standard input and output")
    status = serve(sys.stdin.buffer, sys.stdout.buffer, host=host, submit=submit)
    if queued:
        _after_queueing(args, root, queued[-1])
    return status


def _queue_selection(spec: str) -> list[str]:
    """``queue run`` options for -q's argument: "" every entry; R<text> those with a
    recipient holding it, S<text> those with such a sender (sendmail's -qR, -qS). An interval
    (-q30m, which starts a sendmail daemon) is for ``mxsend daemon``."""
    if not spec:
        return []
    kind, text = spec[:1], spec[1:]
    if kind in ("R", "S") and text:
        return ["--recipient" if kind == "R" else "--sender", text]
    if kind in ("R", "S"):
        raise Refusal(_USAGE, f"-q{kind} needs the text to look for, as in -q{kind}example.com")
    if spec[:1].isdigit():
        raise Refusal(_USAGE, f"-q{spec}: to run the queue at intervals, run mxsend daemon")
    raise Refusal(_USAGE, f"-q{spec}: only -q, -qR<text> and -qS<text> are known")


def _newaliases() -> int:
    sys.stderr.write("newaliases: mxsend keeps no alias database; nothing to rebuild\n")
    return _OK


def _mxsend(command: list[str]) -> int:
    from mxsend.cli import main as mxsend_main

    return mxsend_main(command)


def submit(args: SendmailArgs, stdin: BinaryIO) -> int:
    """Queue the message on ``stdin`` durably, then have it delivered as ``args.delivery``
    says; 0 once it is safe."""
    settings = configured(args)
    host = settings.hostname or host_name()
    rewrite = settings.rewrite
    own = own_address(rewrite.domain or host)
    via = _submission_socket(args)
    root = args.queue_dir or _queuefiles.default_queue_dir(os.environ)
    args.recipients = [a for argument in args.recipients for a in _argument_addresses(argument)]
    data, complete = _read_input(stdin, dot_ends=args.dot_ends)
    drop = None
    if complete and _lean(args) and not settings.signs:
        drop = _drop.prepare(
            data,
            sender=args.sender,
            full_name=args.full_name,
            recipients=args.recipients,
            from_headers=args.from_headers,
            host=host,
            own_address=own,
            rewrite=rewrite,
        )
    if drop is not None:
        queued = None
        if via is not None:
            queued = _to_daemon(via, _drop.request_header(drop), [drop.content])
        by_daemon = queued is not None
        if queued is None:
            try:
                queued = _drop.write(root, drop, uid=os.getuid())
            except _drop.QueueWriteError as exc:
                raise Refusal(_TEMPFAIL, str(exc)) from None  # not queued: the caller retries
    else:
        args.queue_dir = root
        rest = io.BufferedReader(_Replay(data, None if complete else stdin))
        queued, by_daemon = _full(args, rest, host=host, own=own, via=via, settings=settings)
    if not by_daemon:
        _after_queueing(args, root, queued)
    elif args.verbose:  # the daemon delivers it: nothing to wake or start
        sys.stderr.write(f"mxsend: queued by the daemon as {queued}\n")
    return _OK


def configured(args: SendmailArgs) -> _drop.Settings:
    """The config file's settings (-C FILE, $MXSEND_CONFIG, the default file), applied to
    ``args`` where the command line left them open: the sender, the queue, -od. Read from
    this user's cache of them when the file has not changed since; else parsed (and every
    problem in it is exit 78)."""
    environ = os.environ
    path = _drop.config_path(args.config, environ)
    settings = _drop.DEFAULT_SETTINGS
    if path is not None:
        settings = _drop.cached_settings(path, environ) or _load_settings(path)
    if args.sender is None and settings.sender is not None:
        args.sender = settings.sender
    if args.queue_dir is None and not environ.get("MXSEND_QUEUE_DIR"):
        args.queue_dir = settings.queue_dir
    args.delivery = args.delivery or settings.delivery or "background"
    return settings


def _load_settings(path: str) -> _drop.Settings:
    from mxsend.cli._common import UserError
    from mxsend.cli._submit import load_settings

    try:
        return load_settings(path)
    except UserError as exc:
        raise Refusal(int(exc.status), str(exc)) from None


def _submission_socket(args: SendmailArgs) -> str | None:
    """The daemon's submission socket, when this user hands mail to it rather than write a
    queue: not root, no queue named (-q's --queue-dir, $MXSEND_QUEUE_DIR), and a socket at
    $MXSEND_SUBMIT_SOCKET or /run/mxsend/submit.sock."""
    if os.geteuid() == 0 or args.queue_dir or os.environ.get("MXSEND_QUEUE_DIR"):
        return None  # root, or a queue of one's own named
    path = os.environ.get("MXSEND_SUBMIT_SOCKET") or SUBMIT_SOCKET
    try:
        is_socket = os.stat(path).st_mode & 0o170000 == 0o140000
    except OSError:
        return None
    return path if is_socket else None


def _to_daemon(path: str, header: bytes, chunks: Iterable[bytes]) -> str | None:
    """The queue id the daemon gives the submission; None when no daemon answers there (the
    caller queues it in this user's own queue)."""
    try:
        queue_id = _drop.send_request(path, header, chunks)
    except _drop.SubmitRefused as exc:
        status = {550: _NOPERM, 554: _DATAERR}.get(exc.code, _TEMPFAIL)
        raise Refusal(status, f"the daemon refused the message: {exc}") from None
    except _drop.QueueWriteError as exc:
        raise Refusal(_TEMPFAIL, str(exc)) from None
    if queue_id is not None:
        _drop.queued_ids.append(queue_id)
    return queue_id


def _after_queueing(args: SendmailArgs, root: str, queue_id: str) -> None:
    """Have the queue delivered as ``args.delivery`` says. The message is safe already:
    whatever happens here, the exit status stays 0 (never 75 for a queued message, which
    the caller would send again)."""
    try:
        if args.verbose:
            sys.stderr.write(f"mxsend: queued as {queue_id}\n")
        woken = args.delivery != "queue" and _queuefiles.wake(root)
        _start_delivery(root, args.delivery or "background", woken=woken)
    except (OSError, KeyboardInterrupt) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "interrupted"
        sys.stderr.write(f"sendmail: queued as {queue_id}; delivery not started ({why})\n")


def _argument_addresses(argument: str) -> list[str]:
    """The addresses in one recipient argument, which Postfix's sendmail reads as an address
    list: cron passes ``MAILTO=a@x.test,root`` as one argument, and ``Name <addr>`` is
    taken. An argument in no form known here is left whole, for the address check to name."""
    if not any(c in argument for c in ",<("):
        return [argument]
    return _drop.address_list(argument) or [argument]


def _lean(args: SendmailArgs) -> bool:
    """Whether the lean path may take this submission: no DSN options to check."""
    return args.notify is None and args.ret is None and args.envid is None


def _full(
    args: SendmailArgs,
    stdin: BinaryIO,
    *,
    host: str,
    own: str,
    via: str | None,
    settings: _drop.Settings,
) -> tuple[str, bool]:
    """The full path: the queue id, and whether the daemon at ``via`` took the message."""
    from mxsend.cli._common import UserError
    from mxsend.cli._submit import prepare, signing, submit_request
    from mxsend.options import ConfigError

    try:
        sign = signing(args.config) if settings.signs else None
        if via is None:
            alone = _submit_full(
                args, stdin, host=host, own=own, rewrite=settings.rewrite, sign=sign
            )
            return alone, False
        message, file = prepare(
            args, stdin, host=host, own_address=own, rewrite=settings.rewrite, signing=sign
        )
        with file:
            from mxsend.protocol import Content

            header, _ = submit_request(message)
            taken = _to_daemon(via, header, Content.of(message.content).chunks())
            if taken is not None:
                return taken, True
            from mxsend.cli.send import open_queue
            from mxsend.queue import QueueError, enqueue

            with open_queue(args.queue_dir) as store:
                try:
                    [queue_id] = enqueue(store, message, uid=os.getuid())
                except QueueError as exc:
                    raise Refusal(_TEMPFAIL, str(exc)) from None
            _drop.queued_ids.append(queue_id)
            return queue_id, False
    except UserError as exc:
        raise Refusal(int(exc.status), str(exc)) from None
    except ConfigError as exc:  # a DKIM key that cannot be read
        raise Refusal(_CONFIG, str(exc)) from None


def _submit_full(
    args: SendmailArgs,
    stdin: BinaryIO,
    *,
    host: str,
    own: str,
    rewrite: _drop.Rewrite = _drop.NO_REWRITE,
    sign: Callable[[str], Sequence[DkimKey]] | None = None,
) -> str:
    from mxsend.cli._submit import submit as submit_full

    queue_id = submit_full(args, stdin, host=host, own_address=own, rewrite=rewrite, signing=sign)
    _drop.queued_ids.append(queue_id)
    return queue_id


def _read_input(stdin: BinaryIO, *, dot_ends: bool) -> tuple[bytes, bool]:
    """Standard input, up to the lean path's limit: the bytes read and whether that is all
    of the message (end of input, or without -i a line holding only "."). Reads what is
    there as it comes, so a "." typed at a terminal ends the message at once."""
    data = bytearray()
    searched = 0  # where the line that may still be "." starts
    limit = _drop.LEAN_LIMIT
    fd = _fileno(stdin)
    while len(data) <= limit:
        try:
            chunk = os.read(fd, _READ) if fd is not None else stdin.read(_READ)
        except OSError as exc:
            raise Refusal(_NOINPUT, f"cannot read standard input: {exc.strerror}") from None
        if not chunk:
            if dot_ends:
                end = _dot_line(data, searched, eof=True)
                if end is not None:
                    del data[end:]
            return bytes(data), True
        data += chunk
        if dot_ends:
            end = _dot_line(data, searched, eof=False)
            if end is not None:
                del data[end:]
                return bytes(data), True
            searched = data.rfind(b"\n") + 1
    return bytes(data), False


def _fileno(stdin: BinaryIO) -> int | None:
    """Standard input's descriptor, to read what is there as it comes."""
    try:
        return stdin.fileno()
    except (OSError, ValueError, AttributeError):
        return None


def _dot_line(data: bytearray, start: int, *, eof: bool) -> int | None:
    """Where a line holding only "." (and CRs) starts, at or after ``start``: sendmail's end
    of input without -i; lines end in LF, as ``mxsend.message.spool`` reads them."""
    while start < len(data):
        newline = data.find(b"\n", start)
        if newline < 0:
            if eof and data[start:].rstrip(b"\r") == b".":
                return start
            return None
        if data[start:newline].rstrip(b"\r") == b".":
            return start
        start = newline + 1
    return None


class _Replay(io.RawIOBase):
    """What was read of standard input, then the rest of it: the full path's input."""

    def __init__(self, data: bytes, rest: BinaryIO | None) -> None:
        self._data = memoryview(data)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._data:
            n = min(len(buffer), len(self._data))
            buffer[:n] = self._data[:n]
            self._data = self._data[n:]
            return n
        if self._rest is None:
            return 0
        chunk = self._rest.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def host_name() -> str:
    """This host's name, as Postfix's myhostname defaults: the node name when it is a
    domain name with a dot, else the node name in ``localdomain``."""
    node = os.uname().nodename
    if "." in node and _drop.plain_address(f"x@{node}"):
        return node
    if node and _drop.plain_address(f"x@{node}.localdomain"):
        return f"{node}.localdomain"
    return "localhost.localdomain"


def own_address(host: str) -> str:
    """This user at this host: the sender when -f gives none. A uid with no passwd entry (a
    container's) goes by $LOGNAME or $USER, else by its number."""
    import pwd

    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = os.environ.get("LOGNAME") or os.environ.get("USER") or str(uid)
    return f"{user}@{host}"


def _close_inherited() -> None:
    """Keep the caller's other descriptors (a pipe it waits on for EOF) from the delivery
    process: every one past standard error is made close-on-exec."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        if name.isdigit() and int(name) > 2:
            try:
                os.set_inheritable(int(name), False)
            except OSError:  # the directory's own descriptor, closed by now
                continue


def _start_delivery(queue_dir: str, delivery: str, *, woken: bool) -> None:
    """-odq: nothing; a daemon was woken: nothing more; else a one-shot ``mxsend queue run``,
    in the background (-odb) or waited for (-odi)."""
    if delivery == "queue" or woken:
        return
    # -I: isolated, so that nothing in the caller's directory (a planted mxsend/) or its
    # PYTHON* variables runs in the caller's account.
    command = [sys.executable, "-I", "-m", "mxsend", "queue", "run", "--queue-dir", queue_dir]
    null = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    _close_inherited()
    if delivery == "interactive":
        pid = os.posix_spawn(sys.executable, command, os.environ, file_actions=null[:1])
        os.waitpid(pid, 0)
    else:
        # A session of its own: it outlives this command, as a sendmail's delivery does.
        os.posix_spawn(sys.executable, command, os.environ, file_actions=null, setsid=True)
