#!/usr/bin/env python3
"""A raw HTTP/1.1 client over TLS for the log tests: sends requests byte for
byte (what curl would refuse to send), on one connection, and prints each
response's status code on a line of its own.

  raw_tls_client.py PORT SNI FILE   FILE holds the raw requests, separated by
                                    a line "----" (each sent as is)
  raw_tls_client.py PORT SNI --repeat N HOST   N requests for HOST, keep-alive
"""

import socket
import ssl
import sys


def read_response(f):
    status = f.readline()
    if not status:
        return None
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    f.read(length)
    parts = status.split()
    return parts[1].decode() if len(parts) > 1 else "?"


def main():
    port, sni = int(sys.argv[1]), sys.argv[2]
    if sys.argv[3] == "--repeat":
        n, host = int(sys.argv[4]), sys.argv[5].encode()
        requests = [b"GET /r%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (i, host) for i in range(n)]
    else:
        with open(sys.argv[3], "rb") as fh:
            requests = fh.read().split(b"\n----\n")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    # The repeated requests share one connection; each raw one has its own
    # (a refused request may close it).
    if sys.argv[3] == "--repeat":
        sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname=sni)
        f = sock.makefile("rb")
        for request in requests:
            sock.sendall(request)
            print(read_response(f), flush=True)
        return
    for request in requests:
        sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname=sni)
        sock.sendall(request)
        print(read_response(sock.makefile("rb")), flush=True)
        sock.close()


if __name__ == "__main__":
    main()
