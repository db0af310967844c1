#!/usr/bin/env python3
"""A places proxy herd server in Twisted, the way the seed reports build it.

Same command line shape, topology file and protocol as proxy-herd (SPEC sections 1-3), so the
benchmarks can run it side by side and herds can mix it with the other implementations:

    python twisted_herd.py NAME --topology FILE [--links per-update|persistent]
                           [--places-url URL] [--places-key-file FILE] [--places-timeout SECS]
                           [--log-dir DIR] [--log-level LEVEL] [--max-line BYTES]

The Twisted pieces a Twisted user reaches for:
- a `LineReceiver` per connection, built by a `ServerFactory` on `reactor.listenTCP`; clients
  and neighbours alike (an AT line is just a command);
- `--links per-update` (the default, as in the first seed report): `reactor.connectTCP` for
  every flooded AT line, that one line written, then the connection closed;
  `--links persistent` (the second report): a `ReconnectingClientFactory` per neighbour holds
  one link open, reconnects with backoff, and sends everything known when it (re)connects;
- WHATSAT asks Google's legacy Nearby Search with Twisted's HTTP client (`Agent`,
  `readBody`), a Deferred per lookup; replies on a connection leave in request order.

What a line means (`handle_line`), the command line and topology (`start_up`), the lookup's
URL and Google's JSON layout are the asyncio herd's (imported from ../asyncio-herd/herd.py),
so the two Python herds differ only in the framework. Logging goes through Python's `logging` as in the asyncio herd, with Twisted's
own log events routed into it. The key comes from GOOGLE_PLACES_API_KEY or --places-key-file.
"""

import collections
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "asyncio-herd"))

from herd import (  # noqa: E402  (the asyncio herd's protocol helpers)
    error_json,
    handle_line,
    lookup_url,
    nearby_json,
    parse_location,
    squeeze_newlines,
    start_up,
)
from twisted.internet import defer, protocol, reactor  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint  # noqa: E402
from twisted.internet.interfaces import IHalfCloseableProtocol  # noqa: E402
from twisted.logger import STDLibLogObserver, globalLogBeginner  # noqa: E402
from twisted.protocols.basic import LineReceiver  # noqa: E402
from twisted.web.client import Agent, readBody  # noqa: E402
from twisted.web.iweb import IAgentEndpointFactory  # noqa: E402
from twisted.web.http_headers import Headers  # noqa: E402
from zope.interface import implementer  # noqa: E402

log = logging.getLogger("herd")


# --- neighbour links ---------------------------------------------------------------------


class OneLine(protocol.Protocol):
    """Per-update link: write the factory's line, close."""

    def connectionMade(self):
        self.transport.write(self.factory.line)
        self.transport.loseConnection()


class OneLineFactory(protocol.ClientFactory):
    protocol = OneLine
    # One factory per line: no "Starting factory"/"Stopping factory" log lines for each.
    noisy = False

    def __init__(self, neighbour, line):
        self.neighbour = neighbour
        self.line = line

    def clientConnectionFailed(self, connector, reason):
        log.info("connect to %s failed: %s", self.neighbour, reason.getErrorMessage())


class Link(protocol.Protocol):
    """Persistent link: sends the snapshot on connect, then whatever the herd floods."""

    def connectionMade(self):
        self.factory.resetDelay()
        self.factory.link = self
        log.info("link to %s up", self.factory.neighbour)
        lines = [line for _, line in self.factory.herd.records.values()]
        if lines:
            self.transport.write("".join(line + "\n" for line in lines).encode())

    def connectionLost(self, reason):
        if self.factory.link is self:
            self.factory.link = None
        log.info("link to %s dropped: %s", self.factory.neighbour, reason.getErrorMessage())


class LinkFactory(protocol.ReconnectingClientFactory):
    protocol = Link
    # Like the other herds: 50 ms first retry, doubling, at most 2 s apart.
    initialDelay = 0.05
    factor = 2.0
    maxDelay = 2.0

    def __init__(self, herd, neighbour):
        self.herd = herd
        self.neighbour = neighbour
        self.link = None
        self.resetDelay()  # the class default `delay` is the base class's 1 s

    def send(self, line):
        # While the link is down, lines are dropped: the snapshot on reconnect has them.
        if self.link is not None:
            log.info("to %s: %s", self.neighbour, line)
            self.link.transport.write(line.encode() + b"\n")

    def clientConnectionFailed(self, connector, reason):
        log.info("connect to %s failed: %s", self.neighbour, reason.getErrorMessage())
        protocol.ReconnectingClientFactory.clientConnectionFailed(self, connector, reason)


@implementer(IAgentEndpointFactory)
class DirectEndpoints:
    """Connects the HTTP client straight to the URL's host and port: Agent's default
    (HostnameEndpoint) resolves even an IP address in a thread pool, per request."""

    def endpointForURI(self, uri):
        return TCP4ClientEndpoint(reactor, uri.host.decode(), uri.port)


# --- the herd ------------------------------------------------------------------------------


class Herd:
    def __init__(self, name, neighbours, links_mode, places_url, key, timeout):
        self.name = name
        self.records = {}  # client id -> (time in ns, AT line)
        self.neighbours = neighbours  # name -> (host, port)
        self.per_update = links_mode == "per-update"
        self.links = {}
        if not self.per_update:
            for n, (host, port) in neighbours.items():
                self.links[n] = LinkFactory(self, n)
                reactor.connectTCP(host, port, self.links[n])
        self.places_url = places_url
        self.key = key
        self.timeout = timeout
        self.agent = Agent.usingEndpointFactory(reactor, DirectEndpoints())

    def learn(self, client, time_ns, line):
        """Stores a newer location and floods it; False if it was not newer."""
        known = self.records.get(client)
        if known is not None and known[0] >= time_ns:
            return False
        self.records[client] = (time_ns, line)
        for n, (host, port) in self.neighbours.items():
            if self.per_update:
                log.info("to %s: %s", n, line)
                reactor.connectTCP(host, port, OneLineFactory(n, line.encode() + b"\n"))
            else:
                self.links[n].send(line)
        return True

    def whatsat(self, at, radius, bound):
        """A Deferred that fires with the whole WHATSAT reply; never fails."""
        lat, lng = parse_location(at.split()[4].encode())

        def failed(failure):
            if failure.check(defer.TimeoutError, defer.CancelledError):
                return error_json("the place lookup timed out")
            return error_json(f"the place lookup failed: {failure.getErrorMessage()}")

        d = self.fetch(lat, lng, radius)
        d.addCallback(nearby_json, bound)
        d.addErrback(failed)
        d.addCallback(lambda text: f"{at}\n{squeeze_newlines(text)}\n\n")
        return d

    def fetch(self, lat, lng, radius_km):
        try:
            url, path = lookup_url(self.places_url, self.key, lat, lng, radius_km)
        except ValueError as e:
            return defer.fail(e)
        d = self.agent.request(
            b"GET",
            f"http://{url.netloc}{path}".encode(),
            Headers({b"Accept": [b"application/json"]}),
        )

        def body(response):
            got = readBody(response)
            if response.code != 200:

                def check(data):
                    if not data.startswith(b"{"):
                        raise ValueError(f"the place provider answered HTTP {response.code}")
                    return data

                got.addCallback(check)
            return got

        d.addCallback(body)
        d.addTimeout(self.timeout, reactor)
        return d


@implementer(IHalfCloseableProtocol)
class HerdProtocol(LineReceiver):
    """One connection: a client, or a neighbour sending AT lines."""

    delimiter = b"\n"

    def connectionMade(self):
        self.peer = self.transport.getPeer()
        self.peer_text = f"{self.peer.host}:{self.peer.port}"
        self.waiting = collections.deque()  # replies not yet written, in request order
        self.input_done = False
        log.info("new connection %s", self.peer_text)

    def lineReceived(self, line):
        if self.input_done:
            return  # after an over-long line: nothing more is read
        if line.endswith(b"\r"):
            line = line[:-1]
        if line and not line.strip():
            return
        log.info("from %s: %s", self.peer_text, line.decode(errors="replace"))
        reply = handle_line(self.factory.herd, line)
        if reply is not None:
            self.queue(reply)

    def queue(self, reply):
        """Writes `reply` now if nothing is ahead of it, else in its turn."""
        if isinstance(reply, str) and not self.waiting:
            self.send(reply)
            return
        slot = [reply if isinstance(reply, str) else None]
        self.waiting.append(slot)
        if slot[0] is None:

            def ready(text):
                slot[0] = text
                self.write_ready()

            reply.addCallback(ready)

    def write_ready(self):
        while self.waiting and self.waiting[0][0] is not None:
            self.send(self.waiting.popleft()[0])
        if self.input_done and not self.waiting:
            self.transport.loseConnection()

    def send(self, text):
        log.info("to %s: %s", self.peer_text, text.rstrip("\n"))
        self.transport.write(text.encode())

    def lineLengthExceeded(self, line):
        # Longer than the limit: answer with its start and close.
        self.queue("? " + line[: self.MAX_LENGTH].decode(errors="replace") + "\n")
        self.input_done = True
        self.write_ready()

    def readConnectionLost(self):
        # End of input ends the last, unterminated line; close once every reply is out.
        rest, self._buffer = self._buffer, b""
        if rest:
            self.lineReceived(rest)
        self.input_done = True
        self.write_ready()

    def writeConnectionLost(self):
        self.transport.loseConnection()

    def connectionLost(self, reason):
        log.info("closed connection %s", self.peer_text)


class HerdFactory(protocol.ServerFactory):
    protocol = HerdProtocol

    def __init__(self, herd, max_line):
        self.herd = herd
        HerdProtocol.MAX_LENGTH = max_line


def main():
    def links_option(p):
        p.add_argument("--links", choices=["per-update", "persistent"], default="per-update")

    args, servers, neighbours, key = start_up(
        "twisted_herd.py", __doc__.splitlines()[0], links_option
    )
    # Twisted's own events (factory start/stop, unhandled errors) go to the same log.
    globalLogBeginner.beginLoggingTo([STDLibLogObserver(name="twisted")], redirectStandardIO=False)
    host, port = servers[args.name]
    herd = Herd(args.name, neighbours, args.links, args.places_url, key, args.places_timeout)
    try:
        # Twisted's default backlog is 50: the bench's batches of 64 connects (and any crowd
        # of clients) would stall in SYN retries; a server for many clients asks for more.
        reactor.listenTCP(port, HerdFactory(herd, args.max_line), backlog=1024, interface=host)
    except Exception as e:  # CannotListenError: one clear line, non-zero exit
        sys.exit(f"twisted_herd.py: {e}")
    log.info("%s started on %s:%d (%s links)", args.name, host, port, args.links)
    reactor.run()
    log.info("%s stopping", args.name)


if __name__ == "__main__":
    main()
