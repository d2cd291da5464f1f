"""The least an asyncio SMTP sink can do: canned replies, no parsing.

Not a server anyone should run (it checks nothing, keeps no state beyond
"in DATA or not", and answers every command 250).  ``bench_server.py``
measures it beside the real servers as the ceiling of pure-Python asyncio
on this machine: the cost of the event loop, the transport and the system
calls alone, with nothing of SMTP's work done.  A real server's distance to
it is its own overhead; aiosmtpd's distance to it bounds how far ahead of
aiosmtpd any Python server can get.

Run: ``python benchmarks/canned_sink.py 127.0.0.1:2525``.
"""

from __future__ import annotations

import asyncio
import sys

END_OF_DATA = b"\r\n.\r\n"


class CannedSMTP(asyncio.Protocol):
    """One connection: split lines, answer from a table, skip DATA bodies."""

    def __init__(self) -> None:
        self.buffer = b""
        self.in_data = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 canned ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        out = []
        while True:
            if self.in_data:
                end = self.buffer.find(END_OF_DATA)
                if end < 0:
                    # Keep only what could be the start of the terminator.
                    self.buffer = self.buffer[-4:]
                    break
                self.buffer = self.buffer[end + len(END_OF_DATA) :]
                self.in_data = False
                out.append(b"250 2.0.0 OK\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                break
            verb = self.buffer[:4].upper()
            self.buffer = self.buffer[end + 2 :]
            if verb == b"EHLO":
                out.append(b"250-canned\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                out.append(b"354 go ahead\r\n")
                self.in_data = True
                # The body's first line may be a lone ".": the terminator is
                # searched with the CRLF that ended the DATA line in front.
                self.buffer = b"\r\n" + self.buffer
            elif verb == b"QUIT":
                out.append(b"221 2.0.0 bye\r\n")
                self.transport.write(b"".join(out))
                self.transport.close()
                return
            else:
                out.append(b"250 2.0.0 OK\r\n")
        if out:
            self.transport.write(b"".join(out))


async def main(address: str) -> None:
    host, _, port = address.rpartition(":")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(CannedSMTP, host, int(port), backlog=1024)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
