"""server.shards: the flat parameter vector split across several parameter servers.

Shard k owns the contiguous slice `shard_bounds(numel, S)[k]` of the flat vector and its optimizer
state. Adam and RMSprop are elementwise, so S shards fed the same pushes apply exactly the updates one
server would (tested bit for bit); each shard keeps its own version, as the shards of Downpour SGD's
parameter server do.
Shard 0 (the lead) also keeps the run's statistics, decides when to stop and writes the checkpoint,
which holds the whole vector in the unsharded format: a run resumes with any number of shards. The
other shards stop when the lead tells them, just before the final checkpoint, so a push in flight at
the stop may still be applied to their slices: the last checkpoint's slices can differ by a version or
two, as any shard's can while training runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from distributed_a3c.messages import GradientPush, ParameterStore, WeightsReply


def shard_bounds(numel: int, shards: int) -> list[tuple[int, int]]:
    """[lo, hi) of each shard: contiguous, sizes differing by at most one element."""
    return [(numel * k // shards, numel * (k + 1) // shards) for k in range(shards)]


class ShardedParameterStore:
    """S parameter-server shards seen by a worker as one store.

    A push is split into one request per shard, sent to all of them at once; the fresh slices in the
    replies are assembled into one weight vector. The lead shard (0) gets the episode statistics and
    its reply's version, status and stop decision stand for the whole push. The per-shard versions the
    worker holds travel in `shard_versions` of the reply and come back in its next request.

    One push in flight at a time, as a worker makes them: replies share the store's assembled weights.
    """

    def __init__(self, shards: Sequence[ParameterStore]) -> None:
        if not shards:
            raise ValueError("a sharded store needs at least one shard")
        self.shards = list(shards)
        self._weights: torch.Tensor | None = None  # the latest slices from every shard, assembled

    def pull(self, rank: int | None = None) -> WeightsReply:
        return self._combine([shard.pull(rank) for shard in self.shards])

    def push(self, request: GradientPush) -> WeightsReply:
        return self.push_async(request).wait()

    def push_async(self, request: GradientPush) -> torch.futures.Future[WeightsReply]:
        bounds = shard_bounds(request.grads.numel(), len(self.shards))
        futures = [
            shard.push_async(_shard_request(request, k, lo, hi))
            for k, (shard, (lo, hi)) in enumerate(zip(self.shards, bounds, strict=True))
        ]
        return torch.futures.collect_all(futures).then(lambda done: self._combine([f.wait() for f in done.wait()]))

    def _combine(self, replies: list[WeightsReply]) -> WeightsReply:
        changed = [r.weights is not None for r in replies]
        if all(changed) and (self._weights is None or self._weights.dtype != replies[0].weights.dtype):
            self._weights = torch.cat([r.weights for r in replies])
        elif any(changed):
            if self._weights is None:
                raise RuntimeError("a shard sent no weights to a worker that holds none")
            for r, (lo, hi) in zip(replies, shard_bounds(self._weights.numel(), len(replies)), strict=True):
                if r.weights is not None:
                    self._weights[lo:hi].copy_(r.weights)
        lead = replies[0]
        return WeightsReply(
            version=lead.version,
            weights=self._weights if any(changed) else None,
            stop=any(r.stop for r in replies),
            status=lead.status,
            obs_stats=lead.obs_stats,
            shard_versions=[r.version for r in replies],
        )


def _shard_request(request: GradientPush, k: int, lo: int, hi: int) -> GradientPush:
    """Shard k's part of a push: its slice of the gradient; the statistics go to the lead shard only."""
    version = request.version if request.shard_versions is None else request.shard_versions[k]
    # A copy of the slice: TensorPipe sends a view's whole storage unless that is over twice the view,
    # so an uncopied slice of half the vector would carry all of it.
    grads = request.grads[lo:hi].clone()
    if k == 0:
        return GradientPush(
            request.rank,
            version,
            grads,
            request.env_steps,
            request.episode_returns,
            request.episode_lengths,
            request.stats,
            request.obs_stats,
        )
    return GradientPush(request.rank, version, grads, env_steps=0)


def merge_optimizer_states(states: Sequence[dict], sizes: Sequence[int]) -> dict:
    """One single-parameter optimizer state from the states of the shards' slices (of `sizes`), in order.

    Per-element buffers (Adam's moments, RMSprop's square average) are concatenated; scalars such as
    `step` are the lead shard's. A shard that has not stepped yet contributes zeros.
    """
    per_shard = [s["state"].get(0, {}) for s in states]
    first = next((st for st in per_shard if st), None)
    if first is None:
        return {"state": {}, "param_groups": states[0]["param_groups"]}
    merged = {}
    for key, value in first.items():
        if _per_element(value):
            merged[key] = torch.cat(
                [st[key] if st else value.new_zeros(n) for st, n in zip(per_shard, sizes, strict=True)]
            )
        else:
            merged[key] = _copy((per_shard[0] or first)[key])
    return {"state": {0: merged}, "param_groups": states[0]["param_groups"]}


def slice_optimizer_state(state: dict, lo: int, hi: int) -> dict:
    """The part of a single-parameter optimizer state that belongs to the slice [lo, hi)."""
    # Copies, scalars too: optimizers step their state in place, and two loaders must not share a `step`.
    sliced = {
        key: _copy(value[lo:hi] if _per_element(value) else value) for key, value in state["state"].get(0, {}).items()
    }
    return {"state": {0: sliced} if sliced else {}, "param_groups": state["param_groups"]}


def _per_element(value: object) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() >= 1


def _copy(value: object) -> object:
    return value.clone() if isinstance(value, torch.Tensor) else value
