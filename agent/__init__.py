"""NN-Factory on-device profiling agent (stands alone: never imports ``host``).

The agent is a gRPC server (``nnf-agent serve``, service ``nnfactory.agent.v1.ProfilingAgent``, defined in
``protos/nnfactory/agent/v1/agent.proto``; stubs in ``agent/_proto``) that runs on the device and measures
model artifacts with the device's own runtime. It needs only grpcio, protobuf, numpy and one runtime.

Protocol: ``GetDeviceInfo``; ``HasArtifact`` / ``UploadArtifact`` (chunked, content-addressed by SHA-256,
resumable from the bytes the agent kept); ``Profile`` (one) and ``ProfileStream`` (many, one outcome
per request); ``DeleteArtifacts``; ``CacheStats``; plus the standard gRPC health service and server
reflection. Everything both sides must agree on beyond the ``.proto`` (error kinds, metadata keys,
caps, the listening line, addresses) is in :mod:`agent.protocol`.

Measurements are serialised device-wide (FIFO queue + a shared ``flock``); each runs in its own child
process forked from a per-runtime *zygote* that imported the runtime once (``agent.workers``,
``agent.zygote``): the boundary for crashes, hangs (deadline) and out-of-memory, the reason a
peak-memory figure belongs to one model, and ~1.3 s cheaper per request than a fresh Python process.

Trust model (full account in ``docs/agent.md``): TorchScript archives are programs and run; torch.export
archives are unpickled at load (refused unless ``--allow-pickle-formats``); ONNX/TFLite files are
parsed by large native runtimes. So only an authenticated host may send artifacts: a bearer token is
required by default, on loopback too (generated into the agent's state directory; ``--no-auth`` is an
explicit, logged opt-out); non-loopback binds without a token are refused; sizes, threads, memory and
inputs are capped; undecodable messages never reach grpcio's leaking decode path; models run in
children with a deadline, an address-space limit and a Landlock sandbox (no file writes, no TCP) that
die with the agent; the artifact cache is private, bounded and re-verified before each run.

Modules: ``protocol`` (wire contract), ``config`` (settings, derived limits, the agent's files),
``server`` (gRPC service, ``create_server(config)``, bounded ``shutdown``), ``guard`` (decoding, auth,
idle watchdog, concurrency caps), ``requests`` (validation into a typed job), ``locks`` (FIFO queue,
device lock), ``workers`` + ``zygote`` + ``worker`` (measuring children), ``memory`` (fork-equivalent
peak baseline), ``sandbox`` (parent-death signal, Landlock), ``runtimes`` (PyTorch, ONNX Runtime,
LiteRT), ``store`` (artifact cache), ``sysinfo`` (/proc, /sys), ``launch`` (start a local agent),
``cli`` (``nnf-agent``).
"""

__version__ = "0.2.0"
