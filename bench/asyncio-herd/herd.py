#!/usr/bin/env python3
"""A places proxy herd server in Python asyncio, the way the course's solutions write it.

Standard library only (Python 3.11). Same command line shape, topology file and protocol as
proxy-herd (SPEC sections 1-3), so the benchmarks can run it side by side and herds can mix
it with the other implementations:

    python3 herd.py NAME --topology FILE [--places-url URL] [--places-key-file FILE]
                    [--places-timeout SECS] [--log-dir DIR] [--log-level LEVEL]
                    [--max-line BYTES]

- asyncio.start_server serves clients and neighbours alike (an AT line is just a command);
- one task per neighbour keeps a persistent link open, reconnecting with backoff, and sends
  everything known when it (re)connects;
- WHATSAT asks Google's legacy Nearby Search over a small HTTP/1.1 client on
  asyncio.open_connection (plain http:// only: the benchmarks point it at a local stub);
- replies on a connection leave in request order: each line's reply (a string, or a task
  for a WHATSAT) goes into a queue that one writer coroutine awaits in turn.

The Google key comes from GOOGLE_PLACES_API_KEY or --places-key-file, never the command line.
"""

import argparse
import asyncio
import decimal
import json
import logging
import os
import re
import sys
import time
import urllib.parse

LOCATION_RE = re.compile(rb"^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)$")
TIME_RE = re.compile(rb"^(\d+)(?:\.(\d{1,9}))?$")
RADIUS_RE = re.compile(rb"^\d+(?:\.\d+)?$")
DIFF_RE = re.compile(rb"^[+-]\d+(?:\.\d+)?$")
BOUND_RE = re.compile(rb"^\d{1,3}$")

log = logging.getLogger("herd")


def parse_time(t):
    """Client time as exact integer nanoseconds, or None if malformed."""
    m = TIME_RE.match(t)
    if not m:
        return None
    frac = (m.group(2) or b"").ljust(9, b"0")
    return int(m.group(1)) * 1_000_000_000 + int(frac)


def parse_location(loc):
    """(lat, lng) as floats when well formed and in range, else None."""
    m = LOCATION_RE.match(loc)
    if not m:
        return None
    lat, lng = float(m.group(1)), float(m.group(2))
    if -90 <= lat <= 90 and -180 <= lng <= 180:
        return lat, lng
    return None


def format_diff(ns):
    sign = "-" if ns < 0 else "+"
    ns = abs(ns)
    return f"{sign}{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def google_json(value, indent=0):
    """JSON laid out the way Google prints it: three-space indents, `"key" : value`."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [
            f'{pad}   {json.dumps(k)} : {google_json(v, indent + 3)}' for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        if all(not isinstance(v, (dict, list)) for v in value):
            return "[ " + ", ".join(google_json(v) for v in value) + " ]"
        items = [pad + "   " + google_json(v, indent + 3) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    if isinstance(value, decimal.Decimal):
        return str(value)
    return json.dumps(value)


def squeeze_newlines(text):
    return re.sub(r"\n{2,}", "\n", text).rstrip("\n")


def error_json(why):
    return google_json(
        {"error_message": why, "html_attributions": [], "results": [], "status": "UNKNOWN_ERROR"}
    )


def lookup_url(places_url, key, lat, lng, radius_km):
    """(the split base URL, the path and query) of a legacy Nearby Search; logs the lookup
    (without the key). Raises ValueError when no lookup can be made."""
    url = urllib.parse.urlsplit(places_url)
    if url.scheme != "http":
        raise ValueError(f"only http:// base URLs are supported, not {places_url}")
    if not key:
        raise ValueError("no API key (GOOGLE_PLACES_API_KEY or --places-key-file)")
    query = urllib.parse.urlencode(
        {"location": f"{lat},{lng}", "radius": round(radius_km * 1000), "key": key}
    )
    log.info("place lookup at %s,%s radius %s km", lat, lng, radius_km)
    return url, url.path.rstrip("/") + "/maps/api/place/nearbysearch/json?" + query


def nearby_json(body, bound):
    """The provider's JSON body, results cut to `bound`, in Google's layout (number literals
    kept as received). Raises ValueError when it is not a JSON object."""
    value = json.loads(body, parse_float=decimal.Decimal)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    if isinstance(value.get("results"), list):
        value["results"] = value["results"][:bound]
    return google_json(value)


def read_topology(path):
    """Returns ({name: (host, port)}, [(a, b), ...]); exits naming the file and line."""
    servers, named = {}, []
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        sys.exit(f"herd.py: {path}: {e}")
    for number, raw in enumerate(lines, 1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue

        def fail(msg):
            sys.exit(f"herd.py: {path}:{number}: {msg}")

        if len(fields) < 2:
            fail(f"{fields[0]} has no address")
        name, addr = fields[0], fields[1]
        if name in servers:
            fail(f"duplicate server {name}")
        host, _, port = addr.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            fail(f"bad address {addr}")
        servers[name] = (host, int(port))
        for n in fields[2:]:
            if n == name:
                fail(f"{name} is linked to itself")
            named.append((number, name, n))
    links = []
    for number, a, b in named:
        if b not in servers:
            sys.exit(f"herd.py: {path}:{number}: unknown neighbour {b}")
        links.append((a, b))
    return servers, links


def handle_line(herd, line):
    """Acts on one line for `herd` (this file's Herd, or the Twisted herd's, which imports
    this): returns its reply (a string, or what `herd.whatsat` returns for a WHATSAT) or None.

    `herd` has `name`, `records` (client id -> (time in ns, AT line)), `learn(client, time_ns,
    line)` and `whatsat(at, radius, bound)`."""
    received = time.time_ns()
    f = line.split()
    invalid = "? " + line.decode(errors="replace") + "\n"
    if len(f) == 4 and f[0] == b"IAMAT":
        t = parse_time(f[3])
        if t is None or parse_location(f[2]) is None:
            return invalid
        client, loc, ts = (x.decode() for x in f[1:])
        at = f"AT {herd.name} {format_diff(received - t)} {client} {loc} {ts}"
        # Flood first, then reply: the flood must beat the client to the next server.
        herd.learn(client, t, at)
        return at + "\n"
    if len(f) >= 6 and f[0] == b"AT":
        t = parse_time(f[5])
        if t is None or parse_location(f[4]) is None or not DIFF_RE.match(f[2]):
            return invalid
        herd.learn(f[3].decode(), t, b" ".join(f[:6]).decode())
        return None
    if len(f) == 4 and f[0] == b"WHATSAT":
        if not RADIUS_RE.match(f[2]) or not BOUND_RE.match(f[3]):
            return invalid
        radius, bound = float(f[2]), int(f[3])
        known = herd.records.get(f[1].decode())
        if not (0 <= radius <= 50) or bound > 20 or known is None:
            return invalid
        return herd.whatsat(known[1], radius, bound)
    return invalid


class Herd:
    def __init__(self, name, neighbours, places_url, key, timeout, max_line):
        self.name = name
        self.records = {}  # client id -> (time in ns, AT line)
        self.neighbours = neighbours  # name -> (host, port)
        self.queues = {n: asyncio.Queue() for n in neighbours}
        self.places_url = places_url
        self.key = key
        self.timeout = timeout
        self.max_line = max_line

    def learn(self, client, time_ns, line):
        """Stores a newer location and floods it; False if it was not newer."""
        known = self.records.get(client)
        if known is not None and known[0] >= time_ns:
            return False
        self.records[client] = (time_ns, line)
        for q in self.queues.values():
            q.put_nowait(line)
        return True

    # --- neighbour links ---------------------------------------------------------------

    async def link(self, name):
        """Keeps a persistent link to one neighbour open, forever."""
        host, port = self.neighbours[name]
        queue = self.queues[name]
        backoff = 0.05
        while True:
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError as e:
                log.info("connect to %s failed: %s", name, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            log.info("link to %s up", name)
            # What piled up while the link was down is in the snapshot.
            while not queue.empty():
                queue.get_nowait()
            try:
                for _, line in list(self.records.values()):
                    writer.write(line.encode() + b"\n")
                await writer.drain()
                while True:
                    line = await queue.get()
                    log.info("to %s: %s", name, line)
                    writer.write(line.encode() + b"\n")
                    while not queue.empty():
                        more = queue.get_nowait()
                        log.info("to %s: %s", name, more)
                        writer.write(more.encode() + b"\n")
                    await writer.drain()
            except OSError as e:
                log.info("link to %s dropped: %s", name, e)
                writer.close()

    # --- clients -------------------------------------------------------------------------

    async def serve(self, reader, writer):
        peer = writer.get_extra_info("peername")
        log.info("new connection %s", peer)
        replies = asyncio.Queue()
        sender = asyncio.create_task(self.send_replies(writer, replies, peer))
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as e:
                    raw = e.partial  # end of input ends the last, unterminated line
                except asyncio.LimitOverrunError:
                    # Longer than the limit: answer with its start and close.
                    head = (await reader.read(self.max_line)).decode(errors="replace")
                    replies.put_nowait(f"? {head}\n")
                    break
                except OSError:
                    break
                if not raw:
                    break
                line = raw[:-1] if raw.endswith(b"\n") else raw
                if line.endswith(b"\r"):
                    line = line[:-1]
                if line and not line.strip():
                    continue
                log.info("from %s: %s", peer, line.decode(errors="replace"))
                reply = self.handle(line)
                if reply is not None:
                    replies.put_nowait(reply)
        finally:
            replies.put_nowait(None)
            await sender
            log.info("closed connection %s", peer)

    async def send_replies(self, writer, replies, peer):
        """Writes replies in request order; a WHATSAT's task is awaited in its turn."""
        try:
            while True:
                item = await replies.get()
                if item is None:
                    break
                text = await item if isinstance(item, asyncio.Task) else item
                log.info("to %s: %s", peer, text.rstrip("\n"))
                writer.write(text.encode())
                if replies.empty():
                    await writer.drain()
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def handle(self, line):
        return handle_line(self, line)

    def whatsat(self, at, radius, bound):
        """The reply to a WHATSAT, as a task, so later replies can wait for it in turn."""
        return asyncio.create_task(self.lookup(at, radius, bound))

    # --- places --------------------------------------------------------------------------

    async def lookup(self, at, radius, bound):
        lat, lng = parse_location(at.split()[4].encode())
        try:
            body = await asyncio.wait_for(self.fetch(lat, lng, radius), self.timeout)
            text = nearby_json(body, bound)
        except asyncio.TimeoutError:
            text = error_json("the place lookup timed out")
        except (OSError, ValueError) as e:
            text = error_json(f"the place lookup failed: {e}")
        return f"{at}\n{squeeze_newlines(text)}\n\n"

    async def fetch(self, lat, lng, radius_km):
        url, path = lookup_url(self.places_url, self.key, lat, lng, radius_km)
        reader, writer = await asyncio.open_connection(url.hostname, url.port or 80)
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                "Accept: application/json\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            response = await reader.read(4 << 20)
            while True:
                more = await reader.read(4 << 20)
                if not more:
                    break
                response += more
        finally:
            writer.close()
        head, _, body = response.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        for header in head.split(b"\r\n")[1:]:
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"content-length":
                body = body[: int(value)]
        if status != 200 and not body.startswith(b"{"):
            raise ValueError(f"the place provider answered HTTP {status}")
        return body


def start_up(program, description, add_arguments=None):
    """The command line, topology, log and key, the same for both Python herds: returns
    (args, servers, neighbours, key). `add_arguments(parser)` adds a herd's own options."""
    p = argparse.ArgumentParser(prog=program, description=description)
    p.add_argument("name")
    p.add_argument("--topology", default="topology.txt")
    p.add_argument("--places-url", default="https://maps.googleapis.com")
    p.add_argument("--places-key-file")
    p.add_argument("--places-timeout", type=float, default=10.0)
    p.add_argument("--log-dir", default="logs")
    p.add_argument("--log-level", default="info")
    p.add_argument("--max-line", type=int, default=64 * 1024)
    # Accepted for command-line compatibility with proxy-herd; these herds have one way each.
    p.add_argument("--places")
    p.add_argument("--workers")
    if add_arguments is None:
        p.add_argument("--links")
    else:
        add_arguments(p)
    args = p.parse_args()

    servers, links = read_topology(args.topology)
    if args.name not in servers:
        sys.exit(f"{program}: {args.topology}: no server named {args.name}")
    neighbours = {
        (b if a == args.name else a): servers[b if a == args.name else a]
        for a, b in links
        if args.name in (a, b)
    }
    if args.log_level.lower() == "off":
        logging.disable(logging.CRITICAL)
    else:
        os.makedirs(args.log_dir, exist_ok=True)
        logging.basicConfig(
            filename=os.path.join(args.log_dir, f"{args.name}.log"),
            level=getattr(logging, args.log_level.upper(), logging.INFO),
            format="%(asctime)s %(levelname)s %(message)s",
        )
    key = os.environ.get("GOOGLE_PLACES_API_KEY")
    if not key and args.places_key_file:
        with open(args.places_key_file, encoding="utf-8") as f:
            key = f.read().strip()
    return args, servers, neighbours, key


def main():
    args, servers, neighbours, key = start_up("herd.py", __doc__.splitlines()[0])
    asyncio.run(run(args, servers, neighbours, key))


async def run(args, servers, neighbours, key):
    herd = Herd(args.name, neighbours, args.places_url, key, args.places_timeout, args.max_line)
    host, port = servers[args.name]
    server = await asyncio.start_server(herd.serve, host, port, limit=args.max_line)
    log.info("%s started on %s:%d", args.name, host, port)
    links = [asyncio.create_task(herd.link(n)) for n in neighbours]
    try:
        async with server:
            await server.serve_forever()
    finally:
        for t in links:
            t.cancel()
        log.info("%s stopping", args.name)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
