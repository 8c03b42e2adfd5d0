"""NN-Factory on-device profiling agent (stands alone: never imports ``host``).

The agent is a gRPC server (``nnf-agent serve``, service ``nnfactory.agent.v1.ProfilingAgent``, defined in
``protos/nnfactory/agent/v1/agent.proto``; stubs in ``agent/_proto``) that runs on the device and measures
model artifacts with the device's own runtime. It needs only grpcio, protobuf, numpy and one runtime.

Protocol: ``GetDeviceInfo``; ``HasArtifact`` / ``UploadArtifact`` (chunked, content-addressed by SHA-256,
resumable from the bytes the agent kept); ``Profile`` (one) and ``ProfileStream`` (many, one outcome
per request); ``DeleteArtifacts``; plus the standard gRPC health service and server reflection.
Measurements are serialised device-wide (FIFO queue + a shared ``flock``) and each runs in a fresh
worker process (``agent.worker``): the boundary for crashes, hangs (deadline) and out-of-memory, and the
reason a peak-memory figure belongs to one model. Errors are gRPC status codes with clear messages;
trailing metadata ``nnf-error-kind`` refines them (busy, oom, crash, too_large, ...).

Trust model: TorchScript (.pt) and torch.export (.pt2) artifacts are programs, and ONNX/TFLite files
are parsed by large native runtimes, so only an authenticated, trusted host may send artifacts. The
agent binds loopback by default, refuses a non-loopback bind without a token, checks the bearer token
(``authorization: Bearer <token>``) on every call, warns when serving beyond loopback without TLS, caps
message and artifact sizes, never unpickles anything (no pickle; no ``torch.load``), and runs models in
a separate process with a deadline and an address-space limit.

Modules: ``server`` (gRPC service, queue, auth), ``worker`` (measurement process), ``runtimes`` (one small
interface over PyTorch, ONNX Runtime and LiteRT), ``store`` (artifact cache), ``sysinfo`` (/proc, /sys),
``cli`` (``nnf-agent``).
"""

__version__ = "0.1.0"
