#!/usr/bin/env python3
"""A small TLS server for the gateway's network-namespace lab.

It accepts every TLS version from 1.0 to 1.3 (so that any refusal the lab shows
comes from the XDP filter, not from here) and logs, one JSON object per line,
each connection it accepts, each ClientHello it reads (via the SNI callback)
and each handshake's outcome.
"""

import argparse
import json
import socket
import ssl
import sys
import threading


def log(out, lock, **event):
    with lock:
        out.write(json.dumps(event) + "\n")
        out.flush()


def serve_one(conn, peer, ctx, out, lock):
    conn.settimeout(10)
    try:
        tls = ctx.wrap_socket(conn, server_side=True)
    except (ssl.SSLError, OSError) as e:
        log(out, lock, event="handshake_failed", peer=peer, error=type(e).__name__, detail=str(e))
        conn.close()
        return
    log(out, lock, event="handshake", peer=peer, version=tls.version(),
        sni=getattr(tls, "lab_sni", None))
    try:
        tls.sendall(b"hello from the lab origin\n")
        while tls.recv(4096):
            pass
    except (ssl.SSLError, OSError):
        pass
    finally:
        tls.close()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--port", type=int, default=443)
    p.add_argument("--log", required=True)
    args = p.parse_args()

    out = open(args.log, "a", buffering=1)
    lock = threading.Lock()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(args.cert, args.key)

    def on_hello(tls, name, _ctx):
        tls.lab_sni = name
        log(out, lock, event="client_hello", sni=name)

    ctx.sni_callback = on_hello

    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.bind(("::", args.port))
    srv.listen(128)
    log(out, lock, event="listening", port=args.port)
    while True:
        conn, addr = srv.accept()
        peer = addr[0]
        log(out, lock, event="accepted", peer=peer)
        threading.Thread(target=serve_one, args=(conn, peer, ctx, out, lock), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
