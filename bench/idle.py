"""Opens N keep-alive connections to HOST:PORT, makes one request on each, prints "open N",
then holds them until a line arrives on stdin (or stdin closes)."""
import asyncio
import re
import sys

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


async def one(sem, conns):
    async with sem:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        w.write(b"GET / HTTP/1.1\r\nHost: bench.example.com\r\n\r\n")
        await w.drain()
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await asyncio.wait_for(r.read(4096), 10)
            if not chunk:
                raise RuntimeError("connection closed before the response")
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(body) < length:
            body += await asyncio.wait_for(r.read(4096), 10)
        conns.append(w)


async def main():
    conns = []
    sem = asyncio.Semaphore(100)
    await asyncio.gather(*(one(sem, conns) for _ in range(n)))
    print(f"open {len(conns)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for w in conns:
        w.close()


try:
    asyncio.run(main())
except Exception as e:  # reported to the script, which stops
    print(f"error {e!r}", flush=True)
