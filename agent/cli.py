"""``nnf-agent``: command line of the on-device profiling agent.

    nnf-agent serve [--host 127.0.0.1] [--port 0] [--token TOKEN | --token-file F] [--port-file F]
                    [--tls-cert PEM --tls-key PEM] [--cache-dir DIR] [--max-artifact-mb N]
                    [--worker-memory-mb N] [--max-queue N]

Once listening it prints one line ``NNF_AGENT_LISTENING host=<host> port=<port> pid=<pid>`` on stdout
(so a launcher can pass ``--port 0`` and read the port back; ``--port-file`` also writes the bare port
number to a file, atomically), then serves until SIGINT/SIGTERM (exit code 0).
The token may also come from ``--token-file`` or the environment variable ``NNF_AGENT_TOKEN`` (both keep
it out of ``ps``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

LISTENING_PREFIX = "NNF_AGENT_LISTENING"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnf-agent", description="NN-Factory on-device profiling agent (gRPC).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    serve = sub.add_parser("serve", help="serve the profiling agent over gRPC")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1; non-loopback needs --token)")
    serve.add_argument("--port", type=int, default=0, help="port (default 0: any free port, printed on stdout)")
    serve.add_argument("--token", default=None,
                       help="bearer token every call must carry (default: $NNF_AGENT_TOKEN, else none); "
                            "prefer --token-file or the environment: arguments show in ps")
    serve.add_argument("--token-file", default=None, help="read the bearer token from this file (stripped)")
    serve.add_argument("--port-file", default=None,
                       help="also write the bound port to this file (atomically) once listening")
    serve.add_argument("--tls-cert", default=None, help="PEM certificate chain for TLS")
    serve.add_argument("--tls-key", default=None, help="PEM private key for TLS")
    serve.add_argument("--cache-dir", default=None,
                       help="artifact cache directory (default: $TMPDIR/nnf-agent-cache-<uid>)")
    serve.add_argument("--max-artifact-mb", type=float, default=512.0, help="largest artifact accepted (MiB)")
    serve.add_argument("--worker-memory-mb", type=float, default=0.0,
                       help="address-space limit (RLIMIT_AS) of CPU measurement workers in MiB; 0 = none")
    serve.add_argument("--default-deadline-s", type=float, default=600.0,
                       help="deadline of a profile request that sets none (seconds)")
    serve.add_argument("--max-queue", type=int, default=16, help="profile requests allowed to wait (then busy)")
    serve.add_argument("--device-lock", default="default",
                       help="file whose flock serialises measurements of every agent on this device "
                            "(default: $TMPDIR/nnf-agent-device-<uid>.lock; 'none' to disable)")
    serve.add_argument("--worker-nice", default="-20",
                       help="nice value of measurement workers and of their scheduler autogroup (default -20: "
                            "other processes barely interrupt a timed run; needs root/CAP_SYS_NICE, otherwise "
                            "the worker keeps its priority); 'inherit' to leave it. Reported in each "
                            "result's context.extra['nice']")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.set_defaults(func=_serve)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from agent.server import create_server

    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.token_file:
        try:
            token: str | None = Path(args.token_file).read_text().strip() or None
        except OSError as exc:
            print(f"nnf-agent serve: error: cannot read --token-file: {exc}", file=sys.stderr)
            return 2
        if token is None:
            print(f"nnf-agent serve: error: --token-file {args.token_file} is empty", file=sys.stderr)
            return 2
    else:
        token = args.token if args.token is not None else (os.environ.get("NNF_AGENT_TOKEN") or None)
    cache_dir = Path(args.cache_dir) if args.cache_dir else Path(tempfile.gettempdir()) / f"nnf-agent-cache-{os.getuid()}"
    if args.port < 0 or args.port > 65535:
        print(f"nnf-agent serve: error: --port {args.port} is not in 0..65535", file=sys.stderr)
        return 2
    host = args.host
    addr = f"[{host}]:{args.port}" if ":" in host and not host.startswith("[") else f"{host}:{args.port}"
    try:
        server, port = create_server(
            addr, cache_dir=cache_dir, token=token, tls_cert=args.tls_cert, tls_key=args.tls_key,
            max_artifact_bytes=int(args.max_artifact_mb * 1024 * 1024),
            worker_memory_limit_bytes=int(args.worker_memory_mb * 1024 * 1024),
            default_deadline_s=args.default_deadline_s, max_queue=args.max_queue,
            device_lock=None if args.device_lock == "none" else args.device_lock,
            worker_nice=None if args.worker_nice == "inherit" else int(args.worker_nice),
        )
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"nnf-agent serve: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.port_file:
        tmp = Path(f"{args.port_file}.tmp{os.getpid()}")
        tmp.write_text(f"{port}\n")
        os.replace(tmp, args.port_file)
    print(f"{LISTENING_PREFIX} host={host} port={port} pid={os.getpid()}", flush=True)
    logging.getLogger("nnf.agent").info("serving on %s:%d (cache %s, auth %s, tls %s)", host, port, cache_dir,
                                        "on" if token else "off", "on" if args.tls_cert else "off")
    stop.wait()
    server.stop(grace=2.0).wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
