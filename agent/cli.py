"""``nnf-agent``: command line of the on-device profiling agent.

    nnf-agent serve [--host 127.0.0.1] [--port 0] [--state-dir D] [--token-file F | --no-auth]
                    [--tls-cert PEM --tls-key PEM] [--cache-dir DIR] [--cache-quota-mb N]
                    [--max-artifact-mb N] [--worker-memory-mb N] [--max-threads N] [--max-input-mb N]
                    [--allow-pickle-formats] [--isolation fork|process] [--max-queue N] [--port-file F]

Authentication is on by default, on loopback too: without ``--token-file``/``--token``/``$NNF_AGENT_TOKEN``
the agent uses the token in ``STATE_DIR/token`` and generates it there (mode 0600) on first start, so
local clients of the same user find it (``nnf`` does so automatically); ``--no-auth`` turns
authentication off explicitly (logged).

Once listening it prints one line ``NNF_AGENT_LISTENING host=<host> port=<port> pid=<pid> auth=<token|none>
protocol_version=<n>`` on stdout (``agent.protocol.parse_listening_line`` reads it; a launcher can pass
``--port 0`` and read the port back; ``--port-file`` also writes the bare port number to a file,
atomically), then serves until SIGINT/SIGTERM, after which it exits with code 0 within ~5 s whatever
the traffic.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from agent.config import (
    AgentConfig,
    ConfigProblem,
    check_private_dir,
    default_cache_dir,
    default_device_lock_path,
    default_state_dir,
    ensure_token_file,
    read_token_file,
)
from agent.protocol import LISTENING_PREFIX, format_address, format_listening_line

__all__ = ["LISTENING_PREFIX", "build_parser", "main"]

HARD_EXIT_S = 4.5  # after SIGTERM the process is gone within this, even if gRPC does not confirm its stop

log = logging.getLogger("nnf.agent")


def _mb(value: float | None) -> int | None:
    return None if value is None else int(value * 1024 * 1024)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnf-agent", description="NN-Factory on-device profiling agent (gRPC).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    serve = sub.add_parser("serve", help="serve the profiling agent over gRPC")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1; non-loopback needs a token)")
    serve.add_argument("--port", type=int, default=0, help="port (default 0: any free port, printed on stdout)")
    auth = serve.add_argument_group("authentication (on by default)")
    auth.add_argument("--state-dir", default=None,
                      help="the agent's state directory, holding its generated token (default: "
                           "$XDG_STATE_HOME/nnf-agent, i.e. ~/.local/state/nnf-agent; created 0700)")
    auth.add_argument("--token-file", default=None, help="read the bearer token from this file (mode 0600)")
    auth.add_argument("--token", default=None,
                      help="bearer token (prefer --token-file or $NNF_AGENT_TOKEN: arguments show in ps)")
    auth.add_argument("--no-auth", action="store_true",
                      help="serve without a token (loopback only; any local process may then run models as you)")
    serve.add_argument("--port-file", default=None,
                       help="also write the bound port to this file (atomically) once listening")
    serve.add_argument("--tls-cert", default=None, help="PEM certificate chain for TLS")
    serve.add_argument("--tls-key", default=None, help="PEM private key for TLS")
    serve.add_argument("--cache-dir", default=None,
                       help="artifact cache directory (default: $XDG_CACHE_HOME/nnf-agent, i.e. ~/.cache/nnf-agent; "
                            "must be yours and mode 0700)")
    limits = serve.add_argument_group("limits (defaults derived from this device)")
    limits.add_argument("--cache-quota-mb", type=float, default=None,
                        help="artifact cache quota; least recently used artifacts are evicted above it (default: a "
                             "quarter of the free disk, 256 MiB to 4 GiB)")
    limits.add_argument("--partial-expiry-s", type=float, default=3600.0,
                        help="unfinished uploads untouched this long are deleted (default 3600)")
    limits.add_argument("--max-artifact-mb", type=float, default=512.0, help="largest artifact accepted (MiB)")
    limits.add_argument("--worker-memory-mb", type=float, default=None,
                        help="address space a model may add on top of its runtime (RLIMIT_AS of the measuring "
                             "child, CPU); also the most a request may ask for (default: a quarter of the "
                             "device's memory)")
    limits.add_argument("--max-threads", type=int, default=None,
                        help="threads a request may ask for (default: the CPUs this agent may use)")
    limits.add_argument("--max-input-mb", type=float, default=None,
                        help="all inputs of one request together (default: a quarter of the memory limit, <= 1 GiB)")
    limits.add_argument("--max-queue", type=int, default=16, help="profile requests allowed to wait (then busy)")
    limits.add_argument("--idle-timeout-s", type=float, default=30.0,
                        help="a call that sends nothing from its client this long is cancelled (default 30)")
    serve.add_argument("--default-deadline-s", type=float, default=600.0,
                       help="deadline of a profile request that sets none (seconds)")
    serve.add_argument("--allow-pickle-formats", action="store_true",
                       help="accept torch.export (.pt2) archives, whose loader unpickles with "
                            "weights_only=False (arbitrary code at load time); only with trusted clients")
    serve.add_argument("--isolation", default="fork", choices=["fork", "process"],
                       help="fork (default): a zygote per runtime imports it once and forks one child per "
                            "request; process: a fresh Python process per request (slower: ~1.3 s per request "
                            "for torch)")
    serve.add_argument("--no-sandbox", action="store_true",
                       help="do not apply the Landlock sandbox (no file writes, no TCP) to measuring children")
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


def _resolve_token(args: argparse.Namespace) -> tuple[str | None, str]:
    """(token, where it came from)."""
    given = [n for n, v in (("--token-file", args.token_file), ("--token", args.token), ("--no-auth", args.no_auth))
             if v]
    if len(given) > 1:
        raise ConfigProblem(f"{' and '.join(given)} contradict each other: give one")
    if args.no_auth:
        return None, "--no-auth"
    if args.token_file:
        return read_token_file(Path(args.token_file)), f"--token-file {args.token_file}"
    if args.token:
        return args.token, "--token"
    if os.environ.get("NNF_AGENT_TOKEN"):
        return os.environ["NNF_AGENT_TOKEN"], "$NNF_AGENT_TOKEN"
    state = Path(args.state_dir) if args.state_dir else default_state_dir()
    check_private_dir(state, "agent state directory")
    token, created = ensure_token_file(state / "token")
    return token, f"{'generated into' if created else 'read from'} {state / 'token'}"


def _serve(args: argparse.Namespace) -> int:
    from agent.server import create_server, shutdown

    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not 0 <= args.port <= 65535:
        print(f"nnf-agent serve: error: --port {args.port} is not in 0..65535", file=sys.stderr)
        return 2
    from agent.memory import tune_allocator

    tune_allocator()  # a long-running server: keep RSS flat under bursts of large messages
    try:
        token, token_source = _resolve_token(args)
        cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
        config = AgentConfig(
            cache_dir=cache_dir, address=format_address(args.host, args.port), token=token, no_auth=args.no_auth,
            tls_cert=Path(args.tls_cert) if args.tls_cert else None,
            tls_key=Path(args.tls_key) if args.tls_key else None,
            allow_pickle_formats=args.allow_pickle_formats, max_artifact_bytes=_mb(args.max_artifact_mb) or 0,
            cache_quota_bytes=_mb(args.cache_quota_mb), partial_expiry_s=args.partial_expiry_s,
            worker_memory_bytes=_mb(args.worker_memory_mb), max_threads=args.max_threads,
            max_input_bytes=_mb(args.max_input_mb), default_deadline_s=args.default_deadline_s,
            max_queue=args.max_queue, stream_idle_timeout_s=args.idle_timeout_s,
            device_lock_path=None if args.device_lock == "none" else
            (default_device_lock_path() if args.device_lock == "default" else Path(args.device_lock)),
            worker_nice=None if args.worker_nice == "inherit" else int(args.worker_nice),
            isolation=args.isolation, sandbox=not args.no_sandbox,
        )
        server, port = create_server(config)
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
    print(format_listening_line(args.host, port, os.getpid(), token is not None), flush=True)
    lim = server.nnf_servicer.limits
    log.info("serving on %s:%d (auth %s, tls %s, cache %s quota %d MiB, model memory %d MiB, isolation %s)",
             args.host, port, f"on, token {token_source}" if token else "OFF (--no-auth)",
             "on" if config.tls else "off", cache_dir, lim.cache_quota_bytes >> 20, lim.worker_memory_bytes >> 20,
             config.isolation)
    while not stop.wait(3600):
        pass
    log.info("stopping (signal received)")
    # Bounded whatever happens inside gRPC: a timer ends the process if the orderly stop hangs.
    def hard_exit() -> None:
        log.error("stop did not finish in %.1f s; exiting", HARD_EXIT_S)
        logging.shutdown()
        os._exit(0)

    killer = threading.Timer(HARD_EXIT_S, hard_exit)
    killer.daemon = True
    killer.start()
    if not shutdown(server, grace_s=config.shutdown_grace_s):
        log.warning("gRPC did not confirm its stop within the grace period; exiting anyway")
        logging.shutdown()
        os._exit(0)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
