#!/usr/bin/env python3
"""A course-style herd server, written for tests/mixed.rs (issue 9).

It behaves like many student servers of UCLA CS 131's proxy-herd project, on purpose:
- it reads ONE chunk per connection, handles the first line of it, answers, and closes
  (a second line pipelined on the same connection is lost);
- it prints the AT time difference with Python's str(float) (`0.00123`, `-6.5e-05`,
  `-1e+17`), with no sign when positive;
- it floods an AT line to each neighbour on a fresh connection, one line per connection;
- it keeps the newest report per client, comparing client times as floats;
- it accepts only six-field AT lines (extra fields make the line invalid, as in many
  student servers that check `len(fields) == 6`).

WHATSAT answers the stored AT line and a tiny JSON body (no places provider here).

Usage: course_server.py NAME PORT [NEIGHBOUR_PORT ...]
It prints "ready" on stdout once it listens.
"""

import asyncio
import sys
import time


class CourseServer:
    def __init__(self, name, neighbour_ports):
        self.name = name
        self.neighbour_ports = neighbour_ports
        # client id -> (client time as float, AT line)
        self.store = {}

    async def handle(self, reader, writer):
        try:
            data = await reader.read(1 << 16)
            line = data.decode(errors="replace").split("\n")[0].strip()
            reply = self.handle_line(line)
            if reply:
                writer.write(reply.encode())
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def handle_line(self, line):
        fields = line.split()
        if len(fields) == 4 and fields[0] == "IAMAT":
            try:
                sent = float(fields[3])
            except ValueError:
                return "? " + line + "\n"
            skew = time.time() - sent
            at = "AT {} {} {} {} {}".format(self.name, str(skew), fields[1], fields[2], fields[3])
            self.learn(fields[1], sent, at)
            return at + "\n"
        if len(fields) == 6 and fields[0] == "AT":
            try:
                sent = float(fields[5])
                float(fields[2])
            except ValueError:
                return "? " + line + "\n"
            self.learn(fields[3], sent, " ".join(fields))
            return ""
        if len(fields) == 4 and fields[0] == "WHATSAT" and fields[1] in self.store:
            at = self.store[fields[1]][1]
            return at + '\n{\n   "results" : [],\n   "status" : "ZERO_RESULTS"\n}\n\n'
        return "? " + line + "\n"

    def learn(self, client, sent, at):
        known = self.store.get(client)
        if known is not None and known[0] >= sent:
            return
        self.store[client] = (sent, at)
        for port in self.neighbour_ports:
            asyncio.ensure_future(self.flood(port, at))

    async def flood(self, port, at):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write((at + "\n").encode())
            await writer.drain()
            writer.close()
        except (ConnectionError, OSError):
            pass


async def main():
    name, port = sys.argv[1], int(sys.argv[2])
    neighbours = [int(p) for p in sys.argv[3:]]
    server = CourseServer(name, neighbours)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", port)
    print("ready", flush=True)
    async with listener:
        await listener.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
