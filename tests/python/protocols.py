"""Real WebSocket and gRPC origins and clients for tests/tests/protocols.rs.

Origins:  ws-origin PORT | grpc-origin PORT         (print "listening" when ready)
Clients:  ws-client PORT HOST PATH CA CERT KEY      (through the gateway, TLS + client cert)
          grpc-client PORT HOST CA CERT KEY
Clients print one line per fact ("key value"); the Rust test asserts on them.
"""

import asyncio
import json
import ssl
import sys
import time
from concurrent import futures


def ws_origin(port):
    from websockets.asyncio.server import serve

    async def echo(ws):
        async for message in ws:
            if message == "bye":
                await ws.close(code=4000, reason="origin says bye")
            elif message == "headers":
                await ws.send(json.dumps({k.lower(): v for k, v in ws.request.headers.raw_items()}))
            else:
                await ws.send("echo:" + message)

    async def main():
        async with serve(echo, "127.0.0.1", port):
            print("listening", flush=True)
            await asyncio.Future()

    asyncio.run(main())


def ws_client(port, host, path, ca, cert, key):
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)

    async def main():
        uri = f"wss://{host}:{port}{path}"
        try:
            async with connect(uri, ssl=ctx, host="127.0.0.1", port=port, open_timeout=10) as ws:
                print("open", flush=True)
                if path == "/origin-closes":
                    await ws.send("bye")
                    try:
                        await asyncio.wait_for(ws.recv(), 10)
                    except ConnectionClosed as e:
                        print("origin-closed", e.rcvd.code if e.rcvd else None, flush=True)
                    return
                await ws.send("hello")
                print("reply", await ws.recv(), flush=True)
                # Idle longer than the gateway's origin timeout: the tunnel stays.
                await asyncio.sleep(2.5)
                await ws.send("after-idle")
                print("reply", await ws.recv(), flush=True)
                await ws.send("headers")
                headers = json.loads(await ws.recv())
                print("origin-cf-cert-verified", headers.get("cf-cert-verified"), flush=True)
                print("origin-x-forwarded-proto", headers.get("x-forwarded-proto"), flush=True)
            print("closed", ws.close_code, flush=True)
        except InvalidStatus as e:
            print("status", e.response.status_code, flush=True)
            print("body", e.response.body.decode(errors="replace").strip(), flush=True)

    asyncio.run(main())


def grpc_origin(port):
    import grpc

    def unary(request, context):
        verified = dict(context.invocation_metadata()).get("cf-cert-verified", "absent")
        context.set_trailing_metadata((("x-origin-saw-cert-verified", verified),))
        return b"echo:" + request

    def stream(request, context):
        # Longer in total than the gateway's origin timeout, which covers
        # only the response's headers.
        for i in range(4):
            yield f"{i}:".encode() + request
            time.sleep(0.6)

    def fail(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Blocked": grpc.unary_unary_rpc_method_handler(unary),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("listening", flush=True)
    server.wait_for_termination()


def grpc_client(port, host, ca, cert, key):
    import grpc

    read = lambda p: open(p, "rb").read()
    creds = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
    options = (("grpc.ssl_target_name_override", host), ("grpc.default_authority", host))
    channel = grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options)
    try:
        reply, call = channel.unary_unary("/test.Echo/Unary").with_call(b"hi", timeout=10)
    except grpc.RpcError as e:
        print("unary-error", e.code().name, e.details(), flush=True)
        return
    print("unary", reply.decode(), flush=True)
    trailers = dict(call.trailing_metadata())
    print("trailer", trailers.get("x-origin-saw-cert-verified"), flush=True)
    print("unary-code", call.code().name, flush=True)
    started = time.monotonic()
    replies = [r.decode() for r in channel.unary_stream("/test.Echo/Stream")(b"s", timeout=20)]
    print("stream", " ".join(replies), flush=True)
    print("stream-seconds", round(time.monotonic() - started, 1), flush=True)
    for method in ("Fail", "Blocked"):
        try:
            channel.unary_unary(f"/test.Echo/{method}")(b"x", timeout=10)
            print(method.lower(), "OK", flush=True)
        except grpc.RpcError as e:
            print(method.lower(), e.code().name, e.details(), flush=True)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "ws-origin":
        ws_origin(int(args[0]))
    elif cmd == "ws-client":
        ws_client(int(args[0]), *args[1:])
    elif cmd == "grpc-origin":
        grpc_origin(int(args[0]))
    elif cmd == "grpc-client":
        grpc_client(int(args[0]), *args[1:])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
