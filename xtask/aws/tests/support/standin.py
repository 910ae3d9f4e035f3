#!/usr/bin/env python3
"""Stand-ins for the programs `clone-prod` runs to reach the throwaway instance, in the tests.

    standin.py forward --listen PORT --to HOST:PORT --expect-host NAME --log FILE
        A `--tunnel-command` forwarder (like `ssh -L`): listens on 127.0.0.1:PORT and forwards
        each connection to HOST:PORT (the test's PostgreSQL, standing in for the RDS endpoint).

    standin.py plugin <argv as session-manager-plugin gets it>
        A `session-manager-plugin`: checks the argument contract of the AWS CLI (the response in
        the environment variable named by argv[1], never the token in argv), writes what it found
        to $STANDIN_REPORT (JSON), prints "Port N opened for sessionId X." like the real plugin,
        forwards 127.0.0.1:N to $STANDIN_FORWARD_TO, and exits on SIGINT (recording it).

Every forwarded connection is logged with whether the client began with an SSLRequest (the
PostgreSQL wire protocol's TLS negotiation), so the tests can assert that TLS was required.
"""

import json
import os
import signal
import socket
import struct
import sys
import threading

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
lock = threading.Lock()


def log_line(path, record):
    if not path:
        return
    with lock, open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def pump(src, dst, counted=None):
    """Copies src to dst until either ends; the bytes copied go into counted[0]."""
    counted = counted if counted is not None else [0]
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
            counted[0] += len(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(listen_port, to, log):
    host, port = to.rsplit(":", 1)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(16)

    def handle(client):
        upstream = socket.create_connection((host, int(port)))
        first = client.recv(8, socket.MSG_PEEK | socket.MSG_WAITALL)
        if first:
            log_line(log, {"connection": True, "ssl_request": first == SSL_REQUEST})
        else:
            # A readiness probe: connected and closed without a word.
            log_line(log, {"probe": True})
        to_server, to_client = [0], [0]
        up = threading.Thread(target=pump, args=(client, upstream, to_server), daemon=True)
        up.start()
        pump(upstream, client, to_client)
        up.join(5)
        if first:
            # What crossed the tunnel, each way (a remote rehearsal must bring back no data rows).
            log_line(log, {"closed": True, "to_client": to_client[0], "to_server": to_server[0]})

    def accept():
        while True:
            client, _ = server.accept()
            threading.Thread(target=handle, args=(client,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def forward(args):
    opts = dict(zip(args[0::2], args[1::2]))
    log = opts["--log"]
    log_line(log, {"expect_host_ok": ".rds.amazonaws.com" in opts["--expect-host"], "host": opts["--expect-host"]})
    serve(int(opts["--listen"]), opts["--to"], log)
    signal.sigwait([signal.SIGTERM, signal.SIGINT])


def plugin(argv):
    report_path = os.environ["STANDIN_REPORT"]
    report = {"argc": len(argv), "problems": []}
    problems = report["problems"]
    if len(argv) != 6:
        problems.append(f"expected 6 arguments, got {len(argv)}: {argv!r}")
        argv = (argv + [""] * 6)[:6]
    response_name, region, operation, profile, request_json, endpoint = argv
    if response_name != "AWS_SSM_START_SESSION_RESPONSE":
        problems.append(f"argv[1] should name the response variable, got {response_name!r}")
    response = json.loads(os.environ.get(response_name, "{}") or "{}")
    for key in ("SessionId", "TokenValue", "StreamUrl"):
        if not response.get(key):
            problems.append(f"the response has no {key}")
    token = response.get("TokenValue", "")
    if token and any(token in a for a in argv):
        problems.append("the session token is in argv")
    if operation != "StartSession":
        problems.append(f"argv[3] should be StartSession, got {operation!r}")
    request = json.loads(request_json or "{}")
    if not isinstance(request.get("Target"), str):
        problems.append("the request has no Target string (the real plugin panics)")
    params = request.get("Parameters", {})
    local = (params.get("localPortNumber") or ["0"])[0]
    if not endpoint.startswith("http"):
        problems.append(f"argv[6] should be the SSM endpoint URL, got {endpoint!r}")
    if not os.environ.get("AWS_ACCESS_KEY_ID"):
        problems.append("no AWS credentials in the environment (the plugin calls the SSM API)")
    report.update(
        region=region,
        profile=profile,
        request=request,
        endpoint=endpoint,
        session_id=response.get("SessionId"),
        token_in_env=bool(token),
    )
    with open(report_path, "w") as f:
        json.dump(report, f)
    serve(int(local), os.environ["STANDIN_FORWARD_TO"], os.environ.get("STANDIN_LOG"))
    print(f"\nStarting session with SessionId: {response.get('SessionId')}", flush=True)
    print(f"Port {local} opened for sessionId {response.get('SessionId')}.", flush=True)
    print("Waiting for connections...", flush=True)
    sig = signal.sigwait([signal.SIGTERM, signal.SIGINT])
    report["signal"] = signal.Signals(sig).name
    with open(report_path, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "forward":
        forward(rest)
    elif mode == "plugin":
        plugin(rest)
    else:
        sys.exit(f"unknown mode {mode}")
