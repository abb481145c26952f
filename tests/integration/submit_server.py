"""A submission socket on its own, for tests: ``python -m tests.integration.submit_server
QUEUE SOCKET HOST``. Queues into QUEUE what users hand it at SOCKET; prints "ready" once it
listens and each log line after; stops by itself after two minutes."""

from __future__ import annotations

import sys

from twisted.internet import reactor

from mxsend.config import Config, SubmitRule
from mxsend.queue import DiskStore
from mxsend.queue._intake import SenderPolicy
from mxsend.twisted._submit import SubmissionFactory, listen_for_submissions, store_intake


def main() -> None:
    queue, path, host = sys.argv[1:4]
    store = DiskStore(queue)
    rules = Config(submit=(SubmitRule(("*@allowed.test",), user="nobody"),))
    policy = SenderPolicy(host, rules)
    factory = SubmissionFactory(
        store_intake(store, policy),
        clock=reactor,
        max_size=1 << 20,
        log=lambda line: print(line, flush=True),
    )
    listen_for_submissions(reactor, path, factory)  # type: ignore[arg-type]
    print("ready", flush=True)
    reactor.callLater(120, reactor.stop)
    reactor.run()


if __name__ == "__main__":
    main()
