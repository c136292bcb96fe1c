#!/usr/bin/env bash
# Start this node's share of a multi-node job. Run the same command on every node (same RDZV_ENDPOINT
# and RUN_ID); torchrun's c10d rendezvous assigns the ranks, and global rank 0 (the parameter server)
# may land on any node, so give a run directory on a shared filesystem.
#
#   RDZV_ENDPOINT=node0.example:29400 NNODES=2 NPROC_PER_NODE=8 RUN_ID=pong1 \
#     scripts/launch_multinode.sh +experiment=pong hydra.run.dir=/shared/runs/pong1
#
# Variables: RDZV_ENDPOINT (host:port of the rendezvous, required), NNODES (default 2), NPROC_PER_NODE
# (ranks on this node, default 2), RUN_ID (default a3c), LOCAL_ADDR (this node's address as the others
# reach it; default: torchrun's choice), TP_SOCKET_IFNAME (interface for RPC traffic; default: the one
# that routes to the rendezvous host). Everything after the variables goes to distributed_a3c.train.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
: "${RDZV_ENDPOINT:?set RDZV_ENDPOINT=host:port of the rendezvous (the same on every node)}"
"$ROOT/scripts/_setup.sh" ""
args=(--nnodes="${NNODES:-2}" --nproc-per-node="${NPROC_PER_NODE:-2}" --rdzv-backend=c10d
      --rdzv-endpoint="$RDZV_ENDPOINT" --rdzv-id="${RUN_ID:-a3c}")
[ -n "${LOCAL_ADDR:-}" ] && args+=(--local-addr="$LOCAL_ADDR")
cd "$ROOT"
exec "${A3C_VENV:-$ROOT/.venv}/bin/torchrun" "${args[@]}" -m distributed_a3c.train "$@"
