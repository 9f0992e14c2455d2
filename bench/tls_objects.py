"""What the TLS state of one connection costs, without sockets or event loops.

    python -m bench.tls_objects [--pairs 2000] [--tls12]

Builds N client/server pairs of ssl.SSLObject over memory BIOs (the front end's and the
back end's ends of the TLS hop, back-end style: no session tickets), completes each
handshake and one small record each way, and reads this process's PSS before and after:
the difference over N is OpenSSL's SSL objects plus CPython's SSLObject and two MemoryBIOs
per end, with OpenSSL's record buffers released (CPython sets SSL_MODE_RELEASE_BUFFERS).
An idle session over the default TLS hop holds one such pair. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import ssl
import sys
import tempfile
from pathlib import Path

from bench.tls_memory import _make_certs

Pair = tuple[
    ssl.SSLObject, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO, ssl.MemoryBIO, ssl.MemoryBIO
]


def _pss_kb() -> int:
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError("no Pss in /proc/self/smaps_rollup")


def _pair(client: ssl.SSLContext, server: ssl.SSLContext) -> Pair:
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for end in (c, s):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    c.write(b"a1 NOOP\r\n")
    s_in.write(c_out.read())
    s.read(1024)
    s.write(b"a1 OK NOOP completed\r\n")
    c_in.write(s_out.read())
    c.read(1024)
    return c, s, c_in, c_out, s_in, s_out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tls_objects", description=__doc__)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--tls12", action="store_true", help="TLS 1.2 instead of 1.3")
    args = parser.parse_args(argv)
    certs = Path(tempfile.mkdtemp())
    _make_certs(certs)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certs / "cert.pem", certs / "key.pem")
    server.num_tickets = 0
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(certs / "ca.pem")
    if args.tls12:
        client.maximum_version = ssl.TLSVersion.TLSv1_2
    _pair(client, server)  # first-use allocations out of the way
    gc.collect()
    before = _pss_kb()
    held = [_pair(client, server) for _ in range(args.pairs)]
    gc.collect()
    per_pair = (_pss_kb() - before) / len(held)
    result = {
        "pairs": len(held),
        "protocol": held[0][0].version(),
        "openssl": ssl.OPENSSL_VERSION,
        "kb_per_pair": round(per_pair, 1),
    }
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
