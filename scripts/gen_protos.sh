#!/usr/bin/env bash
# Regenerate the committed gRPC/protobuf stubs of the agent protocol.
#
# Usage: bash scripts/gen_protos.sh [OUT_DIR]     (default: agent/_proto)
# Needs grpcio-tools (the `dev` extra). The stubs are committed so devices need no code generator;
# tests/test_agent_protos.py regenerates into a temporary directory and fails if the committed ones drift.
# The generated modules import each other as top-level `nnfactory.agent.v1`; we rewrite that to
# `agent._proto.nnfactory.agent.v1` so they live inside the agent package without touching sys.path.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/agent/_proto}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
"$PY" -m grpc_tools.protoc -I "$ROOT/protos" \
  --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
  "$ROOT/protos/nnfactory/agent/v1/agent.proto"
for d in "$OUT" "$OUT/nnfactory" "$OUT/nnfactory/agent" "$OUT/nnfactory/agent/v1"; do
  [ -f "$d/__init__.py" ] || printf '"""Generated protocol stubs (scripts/gen_protos.sh)."""\n' > "$d/__init__.py"
done
sed -i 's/^from nnfactory\.agent\.v1 import /from agent._proto.nnfactory.agent.v1 import /' \
  "$OUT/nnfactory/agent/v1/agent_pb2_grpc.py"
