"""ParameterServer called in-process: updates, accumulation, staleness, validation, stop rules, checkpoints."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from distributed_a3c.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from distributed_a3c.config import OptimConfig, ServerConfig, TrainConfig
from distributed_a3c.messages import GradientPush
from distributed_a3c.server import ParameterServer

ADAM = OptimConfig(name="adam", lr=0.01, eps=1e-5, beta1=0.9, beta2=0.999)
NO_STOP = TrainConfig(total_env_steps=10**9, target_return=None, max_minutes=None)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def _server(
    optim: OptimConfig = ADAM,
    train: TrainConfig = NO_STOP,
    seed: int = 0,
    **server_kwargs,
) -> ParameterServer:
    return ParameterServer(_model(seed), optim, ServerConfig(**server_kwargs), train)


def _grad(server: ParameterServer, seed: int) -> torch.Tensor:
    return torch.randn(server.num_params, generator=torch.Generator().manual_seed(seed))


def _push(server: ParameterServer, grads, version: int | None = None, rank: int = 1, env_steps: int = 10, **kw):
    version = server.version if version is None else version
    return server.push(GradientPush(rank=rank, version=version, grads=grads, env_steps=env_steps, **kw))


def _manual(server: ParameterServer, optim_cls, **optim_kwargs):
    """A flat parameter equal to the server's initial weights, with its own torch optimizer."""
    param = nn.Parameter(server.flat.weights.detach().clone())
    return param, optim_cls([param], **optim_kwargs)


def _manual_step(param: nn.Parameter, optimizer: torch.optim.Optimizer, grad: torch.Tensor) -> None:
    param.grad = grad.clone()
    optimizer.step()


# ----- applying gradients ---------------------------------------------------------------------------------


def test_one_push_is_one_adam_step_by_hand():
    server = _server()
    w0 = server.flat.weights.detach().double().numpy().copy()
    g = _grad(server, 1)
    reply = _push(server, g)
    assert reply.status == "applied"
    assert reply.version == server.version == 1
    # First Adam step: m_hat = g, v_hat = g^2, so w1 = w0 - lr * g / (|g| + eps) (Kingma & Ba 2015, alg. 1).
    gn = g.double().numpy()
    expected = w0 - ADAM.lr * gn / (np.abs(gn) + ADAM.eps)
    np.testing.assert_allclose(server.flat.weights.double().numpy(), expected, rtol=1e-5, atol=1e-7)
    # The module's parameters are views of the flat weights: the model moved too.
    np.testing.assert_allclose(
        torch.cat([p.detach().flatten() for p in server.model.parameters()]).double().numpy(),
        expected,
        rtol=1e-5,
        atol=1e-7,
    )
    # The reply carries the new weights (the pusher held version 0).
    assert reply.weights is not None
    torch.testing.assert_close(reply.weights.float(), server.flat.weights)


@pytest.mark.parametrize("optim", ["adam", "rmsprop"])
def test_sequence_of_pushes_matches_torch_optimizer(optim):
    cfg = ADAM if optim == "adam" else OptimConfig(name="rmsprop", lr=0.007, alpha=0.95, eps=1e-5)
    server = _server(optim=cfg)
    if optim == "adam":
        param, opt = _manual(server, torch.optim.Adam, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    else:
        param, opt = _manual(server, torch.optim.RMSprop, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps)
    for i in range(4):
        g = _grad(server, 10 + i)
        assert _push(server, g).status == "applied"
        _manual_step(param, opt, g)
    assert server.version == 4
    torch.testing.assert_close(server.flat.weights, param.detach(), rtol=1e-6, atol=1e-7)


def test_pull_returns_a_copy_of_the_current_weights():
    server = _server()
    reply = server.pull()
    assert reply.version == 0 and not reply.stop
    assert torch.equal(reply.weights.float(), server.flat.weights)
    reply.weights.add_(1.0)
    assert not torch.equal(reply.weights.float(), server.flat.weights)


@pytest.mark.parametrize("k", [2, 3])
def test_accumulate_sums_k_pushes_into_one_step(k):
    server = _server(accumulate=k)
    param, opt = _manual(server, torch.optim.Adam, lr=ADAM.lr, betas=(ADAM.beta1, ADAM.beta2), eps=ADAM.eps)
    for step in range(2):
        grads = [_grad(server, 100 * step + i) for i in range(k)]
        w_before = server.flat.weights.clone()
        for i, g in enumerate(grads):
            reply = _push(server, g)
            if i < k - 1:
                assert reply.status == "accumulated"
                assert server.version == step
                assert torch.equal(server.flat.weights, w_before)
            else:
                assert reply.status == "applied"
                assert server.version == step + 1
        _manual_step(param, opt, torch.stack(grads).sum(0))
        torch.testing.assert_close(server.flat.weights, param.detach(), rtol=1e-6, atol=1e-7)


def test_accumulate_ignores_rejected_pushes():
    server = _server(accumulate=2)
    param, opt = _manual(server, torch.optim.Adam, lr=ADAM.lr, betas=(ADAM.beta1, ADAM.beta2), eps=ADAM.eps)
    g1, g2 = _grad(server, 1), _grad(server, 2)
    assert _push(server, g1).status == "accumulated"
    bad = g2.clone()
    bad[0] = float("nan")
    assert _push(server, bad).status == "rejected"
    assert server.version == 0
    assert _push(server, g2).status == "applied"
    _manual_step(param, opt, g1 + g2)
    torch.testing.assert_close(server.flat.weights, param.detach(), rtol=1e-6, atol=1e-7)


# ----- staleness ---------------------------------------------------------------------------------------------


def test_stale_pushes_are_measured_and_dropped_beyond_max_staleness():
    server = _server(max_staleness=2)
    for i in range(3):
        assert _push(server, _grad(server, i)).status == "applied"
    assert server.version == 3
    w_before = server.flat.weights.clone()

    reply = _push(server, _grad(server, 50), version=0)  # staleness 3 > 2
    assert reply.status == "dropped"
    assert server.dropped == 1
    assert server.version == 3
    assert torch.equal(server.flat.weights, w_before)
    assert reply.weights is not None  # the stale worker gets fresh weights
    torch.testing.assert_close(reply.weights.float(), server.flat.weights)

    reply = _push(server, _grad(server, 51), version=1)  # staleness 2 == max: still applied
    assert reply.status == "applied"
    assert server.version == 4
    assert server.dropped == 1

    row = server.snapshot()
    assert row["server/staleness_max"] == 3
    assert row["server/staleness_mean"] == pytest.approx((0 + 0 + 0 + 3 + 2) / 5)
    assert row["server/dropped_pushes"] == 1
    assert row["server/version"] == 4


def test_max_staleness_zero_accepts_only_current_gradients():
    server = _server(max_staleness=0)
    assert _push(server, _grad(server, 0), version=0).status == "applied"
    assert _push(server, _grad(server, 1), version=0).status == "dropped"
    assert _push(server, _grad(server, 2), version=1).status == "applied"
    assert (server.version, server.dropped) == (2, 1)


# ----- validation ----------------------------------------------------------------------------------------------


def _bad_gradients(n: int) -> dict[str, object]:
    nan = torch.zeros(n)
    nan[n // 2] = float("nan")
    inf = torch.zeros(n)
    inf[0] = float("inf")
    ninf = torch.zeros(n)
    ninf[-1] = float("-inf")
    return {
        "too_long": torch.zeros(n + 1),
        "too_short": torch.zeros(n - 1),
        "two_dim": torch.zeros(1, n),
        "int": torch.ones(n, dtype=torch.int64),
        "bool": torch.ones(n, dtype=torch.bool),
        "nan": nan,
        "inf": inf,
        "-inf": ninf,
        "not_a_tensor": [0.0] * n,
    }


@pytest.mark.parametrize(
    "kind", ["too_long", "too_short", "two_dim", "int", "bool", "nan", "inf", "-inf", "not_a_tensor"]
)
def test_invalid_gradients_are_rejected_counted_and_change_nothing(kind):
    server = _server()
    assert _push(server, _grad(server, 0)).status == "applied"  # some optimizer state to protect
    w_before = server.flat.weights.clone()
    opt_before = server.optimizer.state_dict()["state"][0]
    bad = _bad_gradients(server.num_params)[kind]
    assert server.gradient_error(bad) is not None
    reply = _push(server, bad)
    assert reply.status == "rejected"
    assert server.rejected == 1
    assert server.version == 1
    assert torch.equal(server.flat.weights, w_before)
    for k, v in server.optimizer.state_dict()["state"][0].items():
        assert torch.equal(v, opt_before[k]), k
    assert server.snapshot()["server/rejected_pushes"] == 1
    # A valid push afterwards is applied as usual.
    assert _push(server, _grad(server, 1)).status == "applied"
    assert server.rejected == 1


def test_gradient_error_messages_name_the_problem():
    server = _server()
    n = server.num_params
    bad = _bad_gradients(n)
    assert str(n + 1) in server.gradient_error(bad["too_long"])
    assert "int64" in server.gradient_error(bad["int"])
    assert "non-finite" in server.gradient_error(bad["nan"])
    assert "list" in server.gradient_error(bad["not_a_tensor"])
    assert server.gradient_error(torch.zeros(n)) is None
    assert server.gradient_error(torch.zeros(n, dtype=torch.float64)) is None


# ----- replies -------------------------------------------------------------------------------------------------


def test_reply_has_no_weights_when_the_worker_is_current():
    server = _server(accumulate=2)
    reply = _push(server, _grad(server, 0), version=0)
    assert reply.status == "accumulated" and reply.version == 0
    assert reply.weights is None
    reply = _push(server, _grad(server, 1), version=0)
    assert reply.status == "applied" and reply.version == 1
    assert reply.weights is not None
    bad = torch.full((server.num_params,), float("nan"))
    reply = _push(server, bad, version=1)
    assert reply.status == "rejected"
    assert reply.weights is None
    reply = _push(server, bad, version=0)  # rejected, but the worker is behind: it still gets the weights
    assert reply.weights is not None
    torch.testing.assert_close(reply.weights.float(), server.flat.weights)


# ----- stop conditions -----------------------------------------------------------------------------------------


def test_stops_at_total_env_steps():
    server = _server(train=TrainConfig(total_env_steps=100, target_return=None, max_minutes=None))
    assert not _push(server, _grad(server, 0), env_steps=40).stop
    assert not _push(server, _grad(server, 1), env_steps=40).stop
    assert server.stop_reason is None
    reply = _push(server, _grad(server, 2), env_steps=40)
    assert reply.stop
    assert server.stop_reason == "total_env_steps"
    assert server.stats.env_steps == 120
    assert server.pull().stop


def test_target_return_only_counts_after_100_episodes():
    server = _server(train=TrainConfig(total_env_steps=10**9, target_return=50.0, max_minutes=None))
    # A push reports at most one finished episode per env step it took.
    reply = _push(server, _grad(server, 0), env_steps=160, episode_returns=[500.0] * 99, episode_lengths=[500] * 99)
    assert not reply.stop
    assert server.stats.mean_return() == -math.inf
    assert server.stats.episodes == 99
    reply = _push(server, _grad(server, 1), episode_returns=[500.0], episode_lengths=[500])
    assert reply.stop
    assert server.stop_reason == "target_return"
    assert server.stats.mean_return() == pytest.approx(500.0)


def test_target_return_uses_the_last_100_episodes():
    server = _server(train=TrainConfig(total_env_steps=10**9, target_return=50.0, max_minutes=None))
    assert not _push(server, _grad(server, 0), env_steps=160, episode_returns=[0.0] * 150).stop
    assert server.stats.mean_return() == 0.0
    assert not _push(server, _grad(server, 1), env_steps=160, episode_returns=[100.0] * 49).stop  # mean 49
    assert _push(server, _grad(server, 2), episode_returns=[100.0]).stop  # mean 50
    assert server.stop_reason == "target_return"


def test_request_stop_sets_the_first_reason_only():
    server = _server()
    assert server.poll_stop() is None
    server.request_stop("interrupted")
    server.request_stop("something else")
    assert server.stop_reason == "interrupted"
    assert server.poll_stop() == "interrupted"
    assert server.pull().stop
    assert _push(server, _grad(server, 0)).stop


def test_a_worker_whose_first_pull_says_stop_is_told_at_once():
    """A run resumed past its stop condition stops at once: the first pull says so (the worker then says
    goodbye; the lead's wait for that is WorkerRoster's, tested in test_roster.py)."""
    server = _server()
    server.request_stop("target_return")
    assert server.pull(rank=1).stop and server.pull(rank=2).stop


def test_stops_after_max_minutes():
    server = _server(train=TrainConfig(total_env_steps=10**9, target_return=None, max_minutes=1.0))
    assert server.poll_stop() is None
    server.stats.start_time -= 61.0  # pretend a minute went by, without waiting for it
    assert server.poll_stop() == "max_minutes"


def test_training_time_and_max_minutes_count_the_whole_run_across_a_resume(tmp_path):
    """A restarted or continued run's clock goes on from its checkpoint: `time/wall_s` and
    `train.max_minutes` count training time over every attempt, not since the last start."""
    budget = TrainConfig(total_env_steps=10**9, target_return=None, max_minutes=1.0)
    first = _server(train=budget)
    first.stats.start_time -= 40.0  # 40 s of training before the checkpoint
    save_checkpoint(tmp_path / "ckpt.pt", first.state_dict())

    resumed = _server(train=budget)
    resumed.load_state_dict(load_checkpoint(tmp_path / "ckpt.pt"))
    assert 40.0 <= resumed.stats.elapsed_s() < 45.0
    assert resumed.stats.attempt_s() < 5.0
    assert resumed.stats.snapshot(resumed.counters())["time/wall_s"] >= 40.0
    assert resumed.poll_stop() is None
    resumed.stats.attempt_start -= 21.0  # 21 s into this attempt: 61 s in all
    resumed.stats.start_time -= 21.0
    assert resumed.poll_stop() == "max_minutes"


# ----- checkpoints -----------------------------------------------------------------------------------------------


def test_state_dict_round_trip_through_a_checkpoint(tmp_path):
    a = _server(seed=0)
    for i in range(3):
        _push(a, _grad(a, i), episode_returns=[float(i), float(i) + 0.5], episode_lengths=[3, 4])
    path = tmp_path / "ckpt" / "server.pt"
    save_checkpoint(path, a.state_dict())
    loaded = load_checkpoint(path)

    b = _server(seed=123)  # different initial weights, fresh optimizer
    assert not torch.equal(a.flat.weights, b.flat.weights)
    b.load_state_dict(loaded)
    assert torch.equal(b.flat.weights, a.flat.weights)
    assert (
        (b.version, b.stats.env_steps, b.stats.episodes)
        == (a.version, a.stats.env_steps, a.stats.episodes)
        == (3, 30, 6)
    )
    assert list(b.stats.returns) == list(a.stats.returns)
    assert list(b.stats.lengths) == list(a.stats.lengths) == [3, 4] * 3
    # The optimizer state came back too: the same next gradient gives bit-identical weights.
    g = _grad(a, 99)
    _push(a, g)
    _push(b, g)
    assert torch.equal(b.flat.weights, a.flat.weights)
    # ... which a server without the optimizer state would not reproduce.
    c = _server(seed=123)
    c.model.load_state_dict(loaded["model"])
    _push(c, g)
    assert not torch.equal(c.flat.weights, a.flat.weights)


def test_push_counters_go_on_across_a_resume(tmp_path):
    """server/pushes, dropped and rejected pushes count the whole run, as server/version does."""
    a = _server(max_staleness=0)
    _push(a, _grad(a, 0))
    _push(a, _grad(a, 1), rank=2)
    _push(a, _grad(a, 2), version=0)  # one version stale: dropped
    _push(a, torch.full((a.num_params,), float("nan")))  # rejected
    before = a.snapshot()
    assert (before["server/pushes"], before["server/dropped_pushes"], before["server/rejected_pushes"]) == (3, 1, 1)
    save_checkpoint(tmp_path / "ckpt.pt", a.state_dict())

    b = _server(max_staleness=0)
    b.load_state_dict(load_checkpoint(tmp_path / "ckpt.pt"))
    _push(b, _grad(b, 3))
    row = b.snapshot()
    assert (row["server/pushes"], row["server/dropped_pushes"], row["server/rejected_pushes"]) == (4, 1, 1)
    assert (b.counters()["pushes"], b.counters()["dropped"], b.counters()["rejected"]) == (4, 1, 1)
    assert b.stats.pushes_by_rank == {1: 3, 2: 1}


def test_steps_per_second_after_a_resume_count_only_the_steps_taken_since(tmp_path):
    """The first row after a restart must not divide the checkpoint's env steps by one log interval."""
    a = _server()
    a.stats.env_steps = 1_000_000
    save_checkpoint(tmp_path / "ckpt.pt", a.state_dict())
    b = _server()
    b.load_state_dict(load_checkpoint(tmp_path / "ckpt.pt"))
    _push(b, _grad(b, 0), env_steps=10)
    time.sleep(0.05)
    row = b.snapshot()
    assert row["global_step"] == 1_000_010
    assert row["charts/SPS"] <= 10 / 0.05, row["charts/SPS"]  # 10 new steps in at least 50 ms


def test_atomic_save_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "server.pt"
    save_checkpoint(path, {"x": torch.arange(3)})
    save_checkpoint(path, {"x": torch.arange(5)})  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server.pt"]
    assert torch.equal(load_checkpoint(path)["x"], torch.arange(5))


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "server.pt"
    save_checkpoint(path, {"x": torch.arange(3)})

    def crash(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"x": torch.arange(7)})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["x"], torch.arange(3))


class _NotATensor:
    pass


def test_load_checkpoint_is_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": _NotATensor()}, path)
    with pytest.raises(CheckpointError, match="is not a readable distributed_a3c checkpoint"):
        load_checkpoint(path)  # torch's weights_only unpickler refused the object, said in one line
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
