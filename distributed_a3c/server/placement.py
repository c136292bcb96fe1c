"""Which global ranks of a job serve the weights, which aggregate a node's pushes, and which work.

torchrun numbers ranks node by node: node g holds ranks g*L .. g*L+L-1 (L = --nproc-per-node). With
`server.placement=packed` the S shards are ranks 0..S-1, all on the first node: every push of the job
crosses that node's link. With `spread` shard k is the first rank of node k, so the shards' traffic is
shared by S links. With `server.node_aggregate`, the first rank of every node that is not a shard sums the
pushes of its node's other ranks and forwards one push per window: one upload and one download per node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PLACEMENTS = ("auto", "packed", "spread")


class PlacementError(ValueError):
    """A layout this job's nodes cannot take; the message is one line naming the keys."""


@dataclass(frozen=True)
class Layout:
    world_size: int
    shard_ranks: tuple[int, ...]
    """Global rank of parameter-server shard k (shard 0, the lead, is always rank 0)."""
    aggregator_of: dict[int, int] = field(default_factory=dict)
    """Worker rank -> the rank of its node's aggregator (server.node_aggregate); absent: it pushes to the
    shards itself."""

    @property
    def shards(self) -> int:
        return len(self.shard_ranks)

    @property
    def aggregators(self) -> list[int]:
        return sorted(set(self.aggregator_of.values()))

    def role(self, rank: int) -> str:
        if rank in self.shard_ranks:
            return "shard"
        return "aggregator" if rank in self.aggregator_of.values() else "worker"

    def shard_index(self, rank: int) -> int:
        return self.shard_ranks.index(rank)

    @property
    def workers(self) -> list[int]:
        """Ranks that collect experience and compute gradients."""
        return [r for r in range(self.world_size) if self.role(r) == "worker"]

    @property
    def pushers(self) -> list[int]:
        """Ranks that push to the shards: the aggregators and the workers without one."""
        return [r for r in range(self.world_size) if self.role(r) != "shard" and r not in self.aggregator_of]

    def local_workers(self, aggregator: int) -> list[int]:
        return sorted(w for w, a in self.aggregator_of.items() if a == aggregator)

    def pushes_per_forward(self) -> int:
        """The most worker pushes one push to the shards sums (1 without aggregation)."""
        return max((len(self.local_workers(a)) for a in self.aggregators), default=1)


def plan(
    world_size: int,
    shards: int,
    placement: str = "packed",
    node_aggregate: bool = False,
    local_world_size: int | None = None,
    nodes: int = 1,
) -> Layout:
    """The job's layout; PlacementError (one line) when its nodes cannot take it.

    `local_world_size` and `nodes` are torchrun's LOCAL_WORLD_SIZE and GROUP_WORLD_SIZE (one node of
    `world_size` ranks when not given)."""
    local = local_world_size or world_size
    if placement not in PLACEMENTS:
        raise PlacementError(f"server.placement={placement!r} is invalid: must be one of {', '.join(PLACEMENTS)}")
    if placement == "auto":  # spread where there are nodes enough: the shards' traffic crosses several links
        placement = "spread" if shards > 1 and nodes >= shards and local * nodes == world_size else "packed"
    homogeneous = local * nodes == world_size
    if (placement == "spread" or node_aggregate) and not homogeneous:
        raise PlacementError(
            f"server.placement={placement} with server.node_aggregate={node_aggregate} needs the same "
            f"--nproc-per-node on every node: {world_size} ranks are not {nodes} nodes of {local}"
        )
    if placement == "spread" and shards > nodes:
        raise PlacementError(
            f"server.placement=spread is invalid with server.shards={shards}: one shard per node needs at least "
            f"{shards} nodes, this job has {nodes}; use server.placement=packed or fewer shards"
        )
    shard_ranks = tuple(range(shards)) if placement == "packed" else tuple(k * local for k in range(shards))
    aggregator_of: dict[int, int] = {}
    if node_aggregate:
        for node in range(nodes):
            ranks = [r for r in range(node * local, (node + 1) * local) if r not in shard_ranks]
            if len(ranks) >= 2:  # a lone worker pushes to the shards itself
                aggregator_of.update({worker: ranks[0] for worker in ranks[1:]})
    layout = Layout(world_size, shard_ranks, aggregator_of)
    if not layout.workers:
        raise PlacementError(
            f"world size {world_size} is invalid: need {shards} server rank(s) (server.shards={shards}), "
            "the nodes' aggregators and at least 1 worker rank"
        )
    return layout
