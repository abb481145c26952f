"""write_now over real TCP on loopback: one send(2) at once while Twisted holds nothing for
the connection, and the bytes in order when the peer stops reading and Twisted must buffer."""

from __future__ import annotations

from twisted.internet import reactor, ssl, tcp
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from mxsend.twisted._protocol import write_now


class Collect(Protocol):
    """The server side: reads nothing until ``resume()``, then fires ``got`` with ``want``
    bytes."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.data = bytearray()
        self.got: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resume(self) -> None:
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.want and not self.got.called:
            self.got.callback(bytes(self.data))

    def connectionLost(self, reason: object = None) -> None:
        self.lost.callback(None)


class WriteNowTests(TestCase):
    timeout = 60

    async def _connect(self, want: int) -> tuple[tcp.Client, Collect]:
        server = Collect(want)
        port = reactor.listenTCP(0, Factory.forProtocol(lambda: server), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        made: Deferred[None] = Deferred()
        lost: Deferred[None] = Deferred()

        class Client(Protocol):
            def connectionMade(self) -> None:
                made.callback(None)

            def connectionLost(self, reason: object = None) -> None:
                lost.callback(None)

        client = Client()
        reactor.connectTCP("127.0.0.1", port.getHost().port, _once(client))
        await made

        def close() -> Deferred[None]:
            client.transport.abortConnection()  # type: ignore[union-attr]
            return lost.addCallback(lambda _: server.lost)

        self.addCleanup(close)
        transport = client.transport
        assert type(transport) is tcp.Client
        return transport, server

    async def test_an_idle_connection_is_written_at_once(self) -> None:
        transport, server = await self._connect(6)
        write_now(transport, b"hello ")
        # Nothing was left for a later turn of the reactor: the socket took it.
        assert not transport.dataBuffer and transport._tempDataLen == 0
        transport.write(b"x")  # whereas Twisted's own write always waits for the reactor
        assert transport._tempDataLen == 1
        server.resume()
        assert await server.got == b"hello x"

    async def test_bytes_keep_their_order_when_the_peer_stops_reading(self) -> None:
        big = bytes(range(256)) * (16 * 1024)  # 4 MiB: more than the sockets' buffers hold
        tail = [b"<one>", b"<two>", b"<three>"]
        transport, server = await self._connect(len(big) + sum(map(len, tail)))
        write_now(transport, big)
        # The kernel took part of it; Twisted holds the rest, so the next writes queue behind.
        assert transport.dataBuffer or transport._tempDataLen
        for piece in tail:
            write_now(transport, piece)
        server.resume()
        assert await server.got == big + b"".join(tail)

    async def test_the_rest_of_a_part_sent_write_goes_first(self) -> None:
        big = bytes(range(256)) * (16 * 1024)
        tail = b"<after a turn>"
        transport, server = await self._connect(len(big) + len(tail))
        write_now(transport, big)
        await deferLater(reactor, 0.05, lambda: None)  # Twisted moves the rest to dataBuffer
        assert transport.dataBuffer and transport._tempDataLen == 0
        write_now(transport, tail)
        server.resume()
        assert await server.got == big + tail

    async def test_nothing_goes_out_once_the_connection_is_aborted(self) -> None:
        transport, server = await self._connect(1)
        transport.abortConnection()
        write_now(transport, b"after abort")  # write() drops it: so must this
        server.resume()
        await server.lost
        assert server.data == b""

    async def test_after_starttls_nothing_is_written_around_tls(self) -> None:
        transport, server = await self._connect(1)
        transport.startTLS(ssl.optionsForClientTLS("peer.test"))  # type: ignore[attr-defined]
        server.resume()
        await server.got  # the ClientHello: the server here speaks no TLS, so no more comes
        await deferLater(reactor, 0.1, lambda: None)
        assert not transport.dataBuffer and transport._tempDataLen == 0  # all of it went
        write_now(transport, b"secret words")
        await deferLater(reactor, 0.2, lambda: None)
        assert b"secret" not in server.data


def _once(protocol: Protocol) -> Factory:
    from twisted.internet.protocol import ClientFactory

    factory = ClientFactory()
    factory.buildProtocol = lambda _addr: protocol  # type: ignore[method-assign]
    return factory
