#!/usr/bin/env python3
"""A TCP proxy that makes a local registry behave like one across the internet.

Every connection's responses (server to client) are paced to at most --rate bytes/s, which is
what a CDN edge or a long path gives one TCP connection, and every request (client to server
data) is held back --latency-ms before it is forwarded, as a round trip would. Unlike nginx's
limit_rate, which lets each response run a full second ahead of its rate, the pacing is even
from the first byte.

Usage: throttle.py LISTEN_PORT TARGET_HOST:TARGET_PORT --rate 20e6 --latency-ms 20
Prints "listening" once the port is open.
"""
import argparse
import asyncio
import time

CHUNK = 64 * 1024


async def pump(reader, writer, rate=None, delay=0.0):
    """Copies reader to writer; paces to `rate` bytes/s, or delays each chunk by `delay` s."""
    start, sent = time.monotonic(), 0
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            if delay:
                await asyncio.sleep(delay)
            if rate:
                sent += len(data)
                # Send this chunk no earlier than the rate allows for everything so far.
                ahead = start + sent / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                elif ahead < -0.05:
                    # An idle gap (between requests) is not credit to burst with later.
                    start, sent = time.monotonic() - len(data) / rate, len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("target")
    parser.add_argument("--rate", type=float, required=True, help="bytes/s per connection")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pump(client_reader, server_writer, delay=args.latency_ms / 1000),
            pump(server_reader, client_writer, rate=args.rate),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", args.port)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
