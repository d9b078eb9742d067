"""A small HTTP/1.1 load generator: keep-alive clients on raw asyncio streams.

``python -m bench.loadgen PORT PATHS_FILE [--clients 50] [--think 0.1] [--duration S]``

Clients share the paths of ``PATHS_FILE`` (one request path a line), each taking the next
one: every path is requested once, in order, unless ``--duration`` is given, in which
case the list is walked round and round until the time is up (wrk's way). ``--think`` is
the mean pause of a client between requests (uniform in 0-2x, so that clients do not fall
into step); 0 for a closed loop at full speed. Prints one JSON line: requests, seconds,
HTTP statuses, and response bodies counted by text.

Cheaper than an HTTP client library (no per-request objects beyond a few bytes), so it
takes less of the CPU it shares with the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import random
import sys
import time

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120"


async def _client(
    port: int,
    paths: list[str],
    cursor: list[int],
    think: float,
    until: float | None,
    statuses: collections.Counter[int],
    bodies: collections.Counter[str],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f" HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {UA}\r\n\r\n".encode()
    try:
        while True:
            if until is None:
                if cursor[0] >= len(paths):
                    return
                path = paths[cursor[0]]
            else:
                if time.monotonic() >= until:
                    return
                path = paths[cursor[0] % len(paths)]
            cursor[0] += 1
            writer.write(b"GET " + path.encode() + head)
            header = await reader.readuntil(b"\r\n\r\n")
            status = int(header[9:12])
            length = 0
            for line in header.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            statuses[status] += 1
            bodies[body[:24].decode("latin-1")] += 1
            if think:
                await asyncio.sleep(random.uniform(0, 2 * think))
    finally:
        writer.close()


async def run(
    port: int, paths: list[str], clients: int, think: float, duration: float | None
) -> dict[str, object]:
    """Run the load; return the summary."""
    statuses: collections.Counter[int] = collections.Counter()
    bodies: collections.Counter[str] = collections.Counter()
    cursor = [0]
    start = time.monotonic()
    until = None if duration is None else start + duration
    await asyncio.gather(
        *(_client(port, paths, cursor, think, until, statuses, bodies) for _ in range(clients))
    )
    seconds = time.monotonic() - start
    return {
        "requests": sum(statuses.values()),
        "seconds": seconds,
        "statuses": dict(statuses),
        "bodies": dict(bodies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("paths")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--think", type=float, default=0.0)
    parser.add_argument("--duration", type=float, default=None)
    args = parser.parse_args()
    with open(args.paths) as handle:
        paths = handle.read().split()
    gc.disable()  # the generator's collections would show up as the server's latency
    result = asyncio.run(run(args.port, paths, args.clients, args.think, args.duration))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
