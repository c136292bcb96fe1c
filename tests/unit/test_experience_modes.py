"""mode=data and mode=central: the learner's gradient from a worker's experience is the gradient the worker
would have computed; rollouts that wait are learned from together; anything malformed is rejected,
counted, and changes no weight."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from distributed_a3c.build import build_server
from distributed_a3c.config import Config, EnvConfig, TrainConfig, WorkerConfig, validate
from distributed_a3c.messages import ExperiencePush, GradientPush
from distributed_a3c.rl.a2c import a2c_step
from distributed_a3c.rl.experience import concat, evaluate
from distributed_a3c.rl.grads import clip_grad_norm_
from distributed_a3c.server import BatchingPredictor
from distributed_a3c.worker import Worker, make_worker

NO_STOP = TrainConfig(total_env_steps=10**9, target_return=None, max_minutes=None)
TRUNCATING = EnvConfig(vectorization="sync", max_episode_steps=3)  # time limits inside every rollout


def _cfg(mode: str, env: EnvConfig | None = None) -> Config:
    return validate(
        Config(mode=mode, env=env or EnvConfig(), worker=WorkerConfig(envs_per_worker=4, rollout_len=5), train=NO_STOP)
    )


@pytest.mark.parametrize("env", [EnvConfig(), TRUNCATING], ids=["next-step-autoreset", "time-limit-final-obs"])
def test_the_learner_computes_the_gradient_the_worker_would_have(env):
    grad_worker = Worker(_cfg("grad", env), rank=1, store=None)
    data_worker = make_worker(_cfg("data", env), rank=1, store=None)
    torch.testing.assert_close(grad_worker.flat.weights, data_worker.flat.weights)
    torch.manual_seed(0)
    rollout = grad_worker.collect()
    grad_worker.compute_gradients(rollout)
    torch.manual_seed(0)
    push = data_worker.prepare()
    assert isinstance(push, ExperiencePush)
    push.experience = e = push.experience.clone()  # inference tensors: clone before editing in place
    torch.testing.assert_close(e.actions, rollout.actions)  # same seeds, same weights: the same rollout
    if env is TRUNCATING:
        assert e.final_index.shape[0] > 0 and bool(rollout.truncated.any())

    learned = evaluate(data_worker.model, e)
    torch.testing.assert_close(learned.values, rollout.values)
    torch.testing.assert_close(learned.bootstrap_value, rollout.bootstrap_value)
    torch.testing.assert_close(learned.final_values, rollout.final_values)
    loss, _ = a2c_step(data_worker.model, learned, data_worker.hyperparameters)
    data_worker.flat.zero_grad_()
    loss.backward()
    clip_grad_norm_(data_worker.flat.grads, data_worker.cfg.algo.max_grad_norm)
    torch.testing.assert_close(data_worker.flat.grads, grad_worker.flat.grads)


def test_a_data_worker_sends_its_policys_log_probabilities_only_for_vtrace():
    without = _cfg("data")
    without.algo.vtrace = False
    assert make_worker(without, rank=1, store=None).prepare().experience.behaviour_log_probs is None
    cfg = _cfg("data")
    cfg.algo.vtrace = True
    worker = make_worker(cfg, rank=1, store=None)
    e = worker.prepare().experience
    T, B = e.rewards.shape
    with torch.no_grad():
        dist_inputs, _ = worker.model(e.obs.reshape(T * B, -1))
    expected = worker.model.distribution(dist_inputs).log_prob(e.actions.reshape(-1)).reshape(T, B)
    torch.testing.assert_close(e.behaviour_log_probs, expected)  # the weights that acted have not moved


@pytest.mark.parametrize("vtrace", [True, False])
def test_a_central_worker_keeps_the_predictors_log_probabilities_for_vtrace(vtrace):
    server, worker = _server_and_push("central")
    worker.cfg.algo.vtrace = vtrace
    e = worker.prepare().experience
    if not vtrace:
        assert e.behaviour_log_probs is None
        return
    T, B = e.rewards.shape
    with torch.no_grad():
        dist_inputs, _ = server.model(e.obs.reshape(T * B, -1))
    expected = server.model.distribution(dist_inputs).log_prob(e.actions.reshape(-1)).reshape(T, B)
    torch.testing.assert_close(e.behaviour_log_probs, expected)  # the server has not stepped: the same weights


def test_rollouts_side_by_side_are_valued_as_each_alone():
    worker = make_worker(_cfg("data", TRUNCATING), rank=1, store=None)
    first, second = worker.prepare().experience.clone(), worker.prepare().experience.clone()
    both = evaluate(worker.model, concat([first, second]))
    alone = [evaluate(worker.model, e) for e in (first, second)]
    for name in ("values", "final_values", "rewards"):
        torch.testing.assert_close(getattr(both, name), torch.cat([getattr(r, name) for r in alone], 1))
    torch.testing.assert_close(both.bootstrap_value, torch.cat([r.bootstrap_value for r in alone]))


def _server_and_push(mode: str = "data"):
    cfg = _cfg(mode, TRUNCATING)
    server = build_server(cfg, 0, 3, None)
    worker = make_worker(cfg, rank=1, store=server)
    worker.begin()
    return server, worker


def test_rollouts_that_wait_for_a_step_are_learned_from_in_the_next_one():
    server, worker = _server_and_push()
    pushes = [worker.prepare() for _ in range(2)]
    pushes = [ExperiencePush(**{**vars(p), "experience": p.experience.clone()}) for p in pushes]
    replies = []
    with server._learn_lock:  # a step is running: both pushes queue behind it
        threads = [threading.Thread(target=lambda p=p: replies.append(server.push(p))) for p in pushes]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(server._queue) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    for t in threads:
        t.join(timeout=10)
    assert [r.status for r in replies] == ["applied", "applied"]
    assert server.version == 1, "two queued rollouts make one step"
    assert server.snapshot()["server/rollouts_per_step"] == 2


def _corrupt(push: ExperiencePush, what: str) -> object:
    push.experience = e = push.experience.clone()  # inference tensors: clone before editing in place
    if what == "obs shape":
        e.obs = e.obs[:, :, :2]
    elif what == "obs dtype":
        e.obs = e.obs.double()
    elif what == "nan reward":
        e.rewards[0, 0] = float("nan")
    elif what == "inf next obs":
        e.next_obs[0, 0] = float("inf")
    elif what == "action out of range":
        e.actions[0, 0] = 7
    elif what == "short rollout":
        e.rewards = e.rewards[:-1]
    elif what == "final index out of range":
        e.final_index = torch.tensor([[0, 99]])
        e.final_obs = e.obs[0, :1]
    elif what == "acted versions":
        push.acted_versions = [0]
    elif what == "a gradient":
        return GradientPush(1, 0, torch.zeros(10), env_steps=20)
    return push


@pytest.mark.parametrize(
    "what",
    [
        "obs shape",
        "obs dtype",
        "nan reward",
        "inf next obs",
        "action out of range",
        "short rollout",
        "final index out of range",
        "acted versions",
        "a gradient",
    ],
)
def test_malformed_experience_is_rejected_counted_and_changes_nothing(what):
    server, worker = _server_and_push()
    before = server.flat.weights.clone()
    reply = server.push(_corrupt(worker.prepare(), what))
    assert reply.status == "rejected"
    assert server.rejected == 1 and server.version == 0 and server.stats.env_steps == 0
    torch.testing.assert_close(server.flat.weights, before)
    assert server.push(worker.prepare()).status == "applied"  # the next good one is learned from


@pytest.mark.parametrize(
    "obs", [torch.zeros(4, 3), torch.zeros(4, 4, dtype=torch.float64), torch.full((4, 4), float("nan")), "frames"]
)
def test_central_rejects_observations_that_do_not_fit(obs):
    server, _ = _server_and_push("central")
    predictor = BatchingPredictor(server.act, server.observations_error, lambda: 1).start()
    try:
        reply = predictor.predict(1, obs).wait()
        assert reply.actions is None and reply.error and server.rejected == 1
        good = predictor.predict(1, torch.zeros(4, 4)).wait()
        assert good.error is None and good.actions.shape == (4,)
    finally:
        predictor.stop()


def test_the_predictor_batches_one_request_per_living_worker():
    passes: list[int] = []

    def act(rank, obs):
        passes.append(obs.shape[0])
        from distributed_a3c.messages import ActionReply

        return ActionReply(3, torch.arange(obs.shape[0]), -torch.arange(obs.shape[0]).float())

    predictor = BatchingPredictor(act, lambda rank, obs: None, lambda: 2, max_wait_ms=10_000)
    futures = [predictor.predict(rank, torch.zeros(n, 4)) for rank, n in ((1, 3), (2, 5))]
    predictor.start()
    try:
        replies = [f.wait() for f in futures]
        assert passes == [8], "both workers' observations in one forward pass"
        assert replies[0].actions.tolist() == [0, 1, 2] and replies[1].actions.tolist() == [3, 4, 5, 6, 7]
        assert replies[1].log_probs.tolist() == [-3, -4, -5, -6, -7], "each worker gets its rows' log-probs"
        assert {r.version for r in replies} == {3}
        # One worker asks: the pass waits max_wait_ms for the other, unless max_batch rows are in.
        predictor.max_wait_s = 0.05
        t0 = time.monotonic()
        predictor.predict(1, torch.zeros(3, 4)).wait()
        assert time.monotonic() - t0 >= 0.04 and passes[-1] == 3
        predictor.max_batch, predictor.max_wait_s = 3, 10.0
        t0 = time.monotonic()
        predictor.predict(1, torch.zeros(3, 4)).wait()
        assert time.monotonic() - t0 < 5
    finally:
        predictor.stop()
