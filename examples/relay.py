r"""A store-and-forward relay in one file: smtp-server, smtp-queue, smtp-client.

It accepts mail on ``--listen``, answers ``250`` only once the message is in
the durable spool (``--spool``), and forwards it to ``--smarthost`` with
per-recipient retries and RFC 3464 bounces, the way a null client or an
application's outbound relay works::

    python examples/relay.py --listen 127.0.0.1:2526 --spool ./spool \
        --smarthost 127.0.0.1:2525 --tls none

(``smtp-mta sink --listen 127.0.0.1:2525 --out ./mail`` makes a smart host
to try it with.)  It runs on asyncio or trio (``--backend``).  The reference
MTA (``smtp-mta serve``) is this idea grown up: listeners from systemd, MX
routing, LMTP to Dovecot, configuration in Python.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable  # noqa: TC003 (read at run time)

import anyio

from smtp_client import Client, SmartHost, Status, TLSPolicy
from smtp_client import Envelope as ClientEnvelope
from smtp_client import Recipient as ClientRecipient
from smtp_message import Mailbox, Reply, ServerSettings
from smtp_queue import Delivery, Queue, QueueSettings, RecipientResult
from smtp_queue import Envelope as QueueEnvelope
from smtp_server import Envelope, Hooks, Session, Settings, listen, serve

logger = logging.getLogger("relay")


class SpoolHooks(Hooks):
    """Accept a message once it is durably queued (RFC 5321 6.1)."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    async def on_message(
        self, session: Session, envelope: Envelope, body: AsyncIterator[bytes]
    ) -> Reply | None:
        queued = QueueEnvelope.from_commands(envelope.mail_from, envelope.recipients)
        # The body streams from the socket into the spool: never whole in memory.
        message_id = await self.queue.enqueue(queued, body)
        logger.info("queued %s from %s", message_id, envelope.sender)
        return Reply(250, "2.0.0", f"Queued as {message_id}")


def forwarder(
    client: Client, smarthost: SmartHost
) -> Callable[[Delivery], Awaitable[dict[Mailbox, RecipientResult]]]:
    """The queue's delivery handler: one attempt, one result per recipient."""

    async def deliver(delivery: Delivery) -> dict[Mailbox, RecipientResult]:
        queued = delivery.envelope
        # delivery.recipients: the pending ones, never one already delivered.
        recipients = [ClientRecipient(r.mailbox, r.params) for r in delivery.recipients]
        envelope = ClientEnvelope(queued.sender, recipients, queued.params)
        sent = await client.send(smarthost, envelope, delivery.body())
        results: dict[Mailbox, RecipientResult] = {}
        for r in sent.recipients:
            if r.status is Status.DELIVERED:
                results[r.recipient] = RecipientResult.delivered(r.reply, r.host)
            elif r.status is Status.PERMANENT:
                results[r.recipient] = RecipientResult.permanent(r.reply, r.host)
            else:
                results[r.recipient] = RecipientResult.transient(r.reply, r.host)
        return results

    return deliver


def parse_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


async def main(args: argparse.Namespace) -> None:
    host, port = parse_host_port(args.smarthost)
    tls = {"none": TLSPolicy.none(), "required": TLSPolicy.required()}[args.tls]
    smarthost = SmartHost(host, port, tls=tls)
    settings = QueueSettings(hostname=args.hostname)
    server_settings = Settings(protocol=ServerSettings(hostname=args.hostname))
    async with Queue.from_path(args.spool, settings) as queue, Client(helo=args.hostname) as client:
        listener = await listen(args.listen)
        deliver = forwarder(client, smarthost)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: queue.serve(deliver, workers=args.workers))
            logger.info("relaying %s -> %s, spool %s", args.listen, args.smarthost, args.spool)
            await serve(listener, SpoolHooks(queue), server_settings)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:2526", help="HOST:PORT to accept mail on")
    parser.add_argument("--spool", required=True, help="the queue's directory")
    parser.add_argument("--smarthost", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--tls", choices=["none", "required"], default="required")
    parser.add_argument("--hostname", default="relay.localhost", help="the name in EHLO and DSNs")
    parser.add_argument("--workers", type=int, default=4, help="concurrent deliveries")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop quietly
        anyio.run(main, args, backend=args.backend)


if __name__ == "__main__":
    cli()
