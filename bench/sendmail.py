"""Latency of one sendmail submission of a 2 KB message: ``mxsend-sendmail -odq`` beside
Postfix's ``sendmail`` (into a private instance with delivery held) and ``python -c pass`` of
the same interpreter, side by side in one run (alternating, median of many).

    python bench/sendmail.py [--runs 40]

Target: mxsend-sendmail at most 10 ms above ``python -c pass``. Postfix's sendmail only
drops the message for its pickup daemon, which queues it after sendmail exits; the next
command starts once it has (so that Postfix's writes do not slow mxsend's fsyncs).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# bench/queue.py would shadow the standard library's queue; it is loaded by path below.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

TARGET_MS = 10.0


def bench_queue() -> object:
    """bench/queue.py, for its private Postfix and smtp-sink."""
    spec = importlib.util.spec_from_file_location("bench_queue", _HERE / "queue.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_queue"] = module
    spec.loader.exec_module(module)
    return module


def timed(argv: list[str], message: bytes, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, input=message, check=True, timeout=60, env=env)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    q = bench_queue()
    for tool in (q.SENDMAIL, q.SINK):  # type: ignore[attr-defined]
        if not os.path.exists(tool):
            sys.exit(f"{tool} missing: install Debian's postfix package (./dev bench does)")
    message = q.body()  # type: ignore[attr-defined]
    mxsend = str(Path(sys.executable).parent / "mxsend-sendmail")
    sender, recipient = q.SENDER, q.RECIPIENT  # type: ignore[attr-defined]
    with q.workspace() as work:  # type: ignore[attr-defined]
        # As installed: bytecode compiled once (here into a cache outside the tree, which
        # ./dev's PYTHONDONTWRITEBYTECODE would otherwise forbid), not on every run.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env |= {"MXSEND_QUEUE_DIR": str(work / "queue"), "PYTHONPYCACHEPREFIX": str(work / "pyc")}
        # A config file, as a server has: read from the per-user cache after the first run.
        config = work / "mxsend.toml"
        config.write_text('hostname = "client.test"\n\n[sendmail]\ndelivery = "queue"\n')
        config.chmod(0o600)
        configured = env | {"MXSEND_CONFIG": str(config), "XDG_CACHE_HOME": str(work / "cache")}
        sink = q.Sink()  # type: ignore[attr-defined]
        postfix = q.Postfix(work / "postfix", sink.port)  # type: ignore[attr-defined]
        try:
            postfix.start()
            postfix_sendmail = [q.SENDMAIL, "-C", str(postfix.etc), "-f", sender, recipient]  # type: ignore[attr-defined]
            rows: dict[str, Callable[[], float]] = {
                "python -c pass": lambda: timed([sys.executable, "-c", "pass"], b"", env),
                "mxsend-sendmail -odq": lambda: timed(
                    [mxsend, "-odq", "-f", sender, recipient], message, env
                ),
                "  with a config file": lambda: timed(
                    [mxsend, "-odq", "-f", sender, recipient], message, configured
                ),
                "Postfix sendmail": lambda: timed(postfix_sendmail, message),
            }
            for run in rows.values():
                run()  # warm the caches once
            postfix.settle(1, 60)
            times: dict[str, list[float]] = {name: [] for name in rows}
            for done in range(args.runs):
                for name, run in rows.items():  # alternating: drift hits all alike
                    times[name].append(run())
                # Postfix's pickup and cleanup go on after its sendmail exits; their writes
                # would slow the next command's fsyncs. Each command runs on a quiet system.
                postfix.settle(done + 2, 60)
        finally:
            postfix.stop()
            sink.stop()
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"One submission of a {len(message)}-octet message; median of {args.runs} runs, ms")
    print(f"{'command':<24} {'median':>8} {'min':>8} {'vs Postfix':>11}")
    for name, t in times.items():
        print(
            f"{name:<24} {median[name]:>8.1f} {min(t):>8.1f} "
            f"{median[name] / median['Postfix sendmail']:>10.2f}x"
        )
    above = median["mxsend-sendmail -odq"] - median["python -c pass"]
    verdict = "holds" if above <= TARGET_MS else "misses"
    print(f"target: mxsend-sendmail at most {TARGET_MS:g} ms above python -c pass: "
          f"{above:+.1f} ms ({verdict})")  # fmt: skip


if __name__ == "__main__":
    main()
