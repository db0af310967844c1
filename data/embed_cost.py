#!/usr/bin/env python3
"""What building the dataset into the binary costs: the figures in the README.

For each way of running a server given on the command line, starts it (one
server, no neighbours, on a free port) several times and measures
  * start-up: from spawning the process to the first IAMAT reply (the server
    binds first and loads its places before it answers anything, so this is
    the time to load and index the dataset), median of the runs;
  * memory once started: VmRSS from /proc/PID/status, split into RssAnon
    (private to the process) and RssFile (pages of files, here the binary,
    which the kernel shares between every process running it).

Usage:
    python3 data/embed_cost.py LABEL=BINARY[,ARG...] ...
e.g.
    python3 data/embed_cost.py built-in=target/release/proxy-herd \\
        file=target/release/proxy-herd,--places-data,data/places.tsv

Python 3 standard library only; Linux only (/proc).
"""

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024  # MiB
    return fields


def one_run(command):
    """(seconds to the first IAMAT reply, memory fields)."""
    with tempfile.TemporaryDirectory() as work:
        port = free_port()
        topology = os.path.join(work, "t.txt")
        with open(topology, "w") as f:
            f.write(f"Solo 127.0.0.1:{port}\n")
        start = time.monotonic()
        server = subprocess.Popen(command + ["Solo", "--topology", topology,
                                             "--log-dir", work],
                                  cwd=work, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            while True:
                if time.monotonic() - start > 30:
                    raise RuntimeError(f"{command}: no reply in 30 s")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                        s.sendall(b"IAMAT k +34-118 1\n")
                        s.shutdown(socket.SHUT_WR)
                        if s.recv(100).startswith(b"AT Solo"):
                            break
                except OSError:
                    time.sleep(0.002)
            elapsed = time.monotonic() - start
            time.sleep(0.2)  # let the allocator settle
            return elapsed, status(server.pid)
        finally:
            server.terminate()
            server.wait()


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    print("| run as | binary size | start-up (median of %d) | VmRSS | RssAnon | RssFile |"
          % RUNS)
    print("|---|---:|---:|---:|---:|---:|")
    for spec in argv[1:]:
        label, _, rest = spec.partition("=")
        command = rest.split(",")
        command[0] = os.path.abspath(command[0])
        runs = [one_run(command) for _ in range(RUNS)]
        mem = runs[-1][1]
        size = os.path.getsize(command[0]) / 1e6
        print(f"| {label} | {size:.1f} MB | {statistics.median(r[0] for r in runs) * 1000:.0f} ms"
              f" | {mem['VmRSS']:.1f} MiB | {mem['RssAnon']:.1f} MiB | {mem['RssFile']:.1f} MiB |")


if __name__ == "__main__":
    main(sys.argv)
