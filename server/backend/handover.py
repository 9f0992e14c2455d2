"""The back-end side of the front-end to back-end hand-over (server/protocols/handover.py) over
asyncio streams, for every service that only the organization's own services may use: the IMAP
and POP3 back ends and MSExchangeDelivery.

Until the peer's proof is checked nothing else is read: at most handover.MAX_INPUT bytes, within
a fixed deadline from the connection's start (bytes do not extend it), and no more than a set
number of unproved peers at a time (the next ones are closed at once). docs/security.md."""

from __future__ import annotations

import asyncio
from typing import Protocol

from server.directory import ProxySecret
from server.protocols import handover
from server.runtime.service import ServiceContext


class HandoverSide(Protocol):
    """What prove_peer needs of the service: its context, the secret and the count of peers
    in the hand-over now."""

    ctx: ServiceContext
    proxy_secret: ProxySecret
    unauthenticated: int


async def prove_peer(
    side: HandoverSide,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    protocol: str,
    deadline: float,
    limit: int,
) -> handover.BackendHandshake | None:
    """Run the hand-over up to the peer's proof. The handshake, its `accepted` set (the caller
    answers with its ok() or refuse()); None: the peer failed, went away or was one too many
    (logged here), and the caller closes."""
    ctx = side.ctx
    peer = (writer.get_extra_info("peername") or ("", 0))[0]
    if side.unauthenticated >= limit:
        ctx.log.warning(
            "service=%s event=handover-refused peer=%s reason=%r",
            ctx.name,
            peer,
            "too many connections in the hand-over",
        )
        return None
    side.unauthenticated += 1
    try:
        async with asyncio.timeout(deadline):
            secret = side.proxy_secret.cached() or await asyncio.to_thread(side.proxy_secret.load)
            shake = handover.BackendHandshake(secret, protocol, ctx.server)
            writer.write(shake.challenge())
            while shake.accepted is None:
                data = await reader.read(shake.room())
                if not data:
                    return None
                answer = shake.receive(data)
                if answer:
                    writer.write(answer)
    except TimeoutError:
        ctx.log.info("service=%s event=handover-timeout peer=%s", ctx.name, peer)
        return None
    except handover.HandoverError as exc:
        ctx.log.warning(
            "service=%s event=handover-failed peer=%s error=%r", ctx.name, peer, str(exc)
        )
        return None
    finally:
        side.unauthenticated -= 1
    return shake
