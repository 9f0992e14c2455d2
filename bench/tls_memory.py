"""Memory per idle TLS connection, with asyncio's own SSLProtocol and with shared buffers.

    python -m bench.tls_memory [--connections 2000] [--modes asyncio shared no-tickets]

For each mode a TLS echo server process and a client process (both asyncio, both on
127.0.0.1) are started; the client opens N TLS connections, completes the handshake and one
round trip on each, and then holds them idle. PSS (psutil, /proc/PID/smaps_rollup) of each
process is read before the connections open and while they are held; the difference divided
by N is what one idle connection costs each side. `shared` runs
server.runtime.sslbuffers.install() in both processes, as every mailctl service does;
`asyncio` leaves asyncio as it is; `no-tickets` is `shared` with a server that sends no TLS 1.3
session tickets (tls.server_context(..., session_tickets=False), what the back ends use:
their only clients, the front ends, never resume). A front-end session over the default TLS hop holds two such
pairs (client -> front end, front end -> back end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("asyncio", "shared", "no-tickets")


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _prepare(mode: str) -> None:
    _raise_fd_limit()
    if mode != "asyncio":
        from server.runtime import sslbuffers

        if not sslbuffers.install():
            raise SystemExit("shared TLS buffers could not be installed on this Python")


async def _serve(certs: Path, mode: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "cert.pem", certs / "key.pem")
    if mode == "no-tickets":
        context.num_tickets = 0

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=context, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def _clients(certs: Path, port: int, count: int) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(certs / "ca.pem")
    print("started", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    gate = asyncio.Semaphore(100)  # a listen backlog holds a few hundred: do not flood it
    held = []

    async def one() -> None:
        async with gate:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="localhost"
            )
            writer.write(b"hello\n")
            await reader.readline()
            held.append((reader, writer))

    await asyncio.gather(*(one() for _ in range(count)))
    print("held", len(held), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def _make_certs(folder: Path) -> None:
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(folder / "ca.pem")
    leaf = ca.issue_cert("localhost")
    leaf.private_key_pem.write_to_path(folder / "key.pem")
    leaf.cert_chain_pems[0].write_to_path(folder / "cert.pem")


def _pss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_full_info().pss


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.tls_memory", *args],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def measure(mode: str, connections: int, certs: Path) -> dict[str, object]:
    server = _child("_server", mode, str(certs))
    client: subprocess.Popen[str] | None = None
    try:
        assert server.stdout is not None and server.stdin is not None
        port = server.stdout.readline().strip()
        client = _child("_client", mode, str(certs), port, str(connections))
        assert client.stdout is not None and client.stdin is not None
        if client.stdout.readline().strip() != "started":
            raise RuntimeError("client did not start")
        before = _pss(server.pid), _pss(client.pid)
        client.stdin.write("go\n")
        client.stdin.flush()
        held = int(client.stdout.readline().split()[1])
        after = _pss(server.pid), _pss(client.pid)
        per = [round((a - b) / held / 1024, 1) for a, b in zip(after, before, strict=True)]
        return {
            "mode": mode,
            "connections": held,
            "server_kb_per_conn": per[0],
            "client_kb_per_conn": per[1],
            "pair_kb_per_conn": round(per[0] + per[1], 1),
        }
    finally:
        for process in (client, server):
            if process is not None:
                if process.stdin is not None:
                    process.stdin.close()
                process.wait(30)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_server":
        _prepare(argv[1])
        asyncio.run(_serve(Path(argv[2]), argv[1]))
        return
    if argv and argv[0] == "_client":
        _prepare(argv[1])
        asyncio.run(_clients(Path(argv[2]), int(argv[3]), int(argv[4])))
        return
    parser = argparse.ArgumentParser(
        prog="python -m bench.tls_memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        _make_certs(Path(folder))
        for mode in opts.modes:
            print(json.dumps(measure(mode, opts.connections, Path(folder))), flush=True)


if __name__ == "__main__":
    main()
