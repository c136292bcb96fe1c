#!/usr/bin/env bash
# Start this node's share of a multi-node job. Run the same command on every node (same RDZV_ENDPOINT and
# RUN_ID); torchrun's c10d rendezvous assigns the ranks, and global rank 0 (the parameter server) may land
# on any node, also after a restart: give a run directory on a shared filesystem.
#
#   RDZV_ENDPOINT=10.0.0.1:29400 NNODES=2 NPROC_PER_NODE=8 RUN_ID=pong1 \
#     scripts/launch_multinode.sh +experiment=pong hydra.run.dir=/shared/runs/pong1
#
# Variables:
#   RDZV_ENDPOINT   host:port of the rendezvous, the same on every node (required). The node that owns this
#                   address hosts torchrun's store (--rdzv-conf=is_host=1, found by itself); its port must be
#                   free there and reachable from the others.
#   NNODES          nodes in the job (default 2), or a range MIN:MAX for an elastic job (nodes may join and
#                   leave; the job restarts from its checkpoint each time)
#   NPROC_PER_NODE  ranks on this node (default 2): workers, plus the parameter server on one node
#   MAX_RESTARTS    restarts after a failure (default 3): each resumes from the run directory's checkpoint
#   RUN_ID          the job's name in the rendezvous, the same on every node (default a3c)
#   LOCAL_ADDR      this node's address as the others reach it (default: the one that routes to the
#                   rendezvous host; never the hostname's, which is often loopback)
#   TP_SOCKET_IFNAME / GLOO_SOCKET_IFNAME   interface for RPC traffic (default: the one routing to MASTER_ADDR)
#   A3C_AGENT_GRACE_S  seconds torchrun's agent may outlive this node's ranks before it is stopped (default 30)
# Everything after the variables goes to distributed_a3c.train as Hydra overrides.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
: "${RDZV_ENDPOINT:?set RDZV_ENDPOINT=host:port of the rendezvous (the same on every node)}"
"$ROOT/scripts/_setup.sh" ""

case " $* " in
  *" hydra.run.dir="*) ;;
  *) echo "launch_multinode.sh: error: give hydra.run.dir=<a directory on a filesystem every node shares>:" \
       "rank 0 may land on any node, also after a restart, and must find the run's checkpoint there" >&2
     exit 2 ;;
esac

rdzv_host="${RDZV_ENDPOINT%:*}"
rdzv_ip="$(getent ahostsv4 "$rdzv_host" | awk 'NR == 1 {print $1}')"
if [ -z "$rdzv_ip" ]; then
  echo "launch_multinode.sh: error: RDZV_ENDPOINT=$RDZV_ENDPOINT: cannot resolve $rdzv_host" >&2
  exit 2
fi
# The node whose own address is the endpoint hosts the store: torchrun's own check compares hostnames,
# which fails where a hostname resolves to loopback.
is_host=0
if ip -o -4 addr show | awk '{print $4}' | cut -d/ -f1 | grep -qx "$rdzv_ip"; then
  is_host=1
fi
local_addr="${LOCAL_ADDR:-$(ip -o route get "$rdzv_ip" | sed -n 's/.* src \([0-9.]*\).*/\1/p')}"

# A node that died counts as gone after 3 missed heartbeats: every 2 s (torchrun's 5 s made a restart
# wait 15 s for it). last_call_timeout: how long an elastic rendezvous waits for more nodes past the minimum.
# torch 2.13's shared store publishes a round's MASTER_ADDR only in its first round: a node joining a running
# job would wait for it forever. Without sharing, rank 0 hosts a fresh store each attempt.
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1

args=(--nnodes="${NNODES:-2}" --nproc-per-node="${NPROC_PER_NODE:-2}" --max-restarts="${MAX_RESTARTS:-3}"
      --rdzv-backend=c10d --rdzv-endpoint="$RDZV_ENDPOINT" --rdzv-id="${RUN_ID:-a3c}"
      --rdzv-conf="is_host=$is_host,last_call_timeout=${LAST_CALL_TIMEOUT:-5},keep_alive_interval=2")
[ -n "$local_addr" ] && args+=(--local-addr="$local_addr")
cd "$ROOT"
# The supervisor stops torchrun's agent once this node's ranks are over and it still waits for nodes that
# are gone (its exit barrier, a rendezvous store cut off): A3C_AGENT_GRACE_S (default 30) after the last
# rank. Its exit code is what the ranks said (docs/RELIABILITY.md).
VENV="${A3C_VENV:-$ROOT/.venv}"
exec "$VENV/bin/python" -m distributed_a3c.distributed.supervise -- \
  "$VENV/bin/torchrun" "${args[@]}" -m distributed_a3c.train "$@"
