"""Evaluate a trained agent: `a3c-eval RUN_DIR_OR_CHECKPOINT [--episodes 10] [--sample] [--video DIR]`.

Loads `checkpoint.pt` (weights_only), rebuilds the env and the model from the config stored in it, and
runs full episodes in one env: greedy actions by default (argmax / Gaussian mean), sampled with
--sample. Atari life-loss terminals are switched off, so every episode is a whole game. Prints one line
per episode and a JSON summary.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from distributed_a3c.checkpoint import load_run_checkpoint
from distributed_a3c.config import Config
from distributed_a3c.envs import make_env_fn
from distributed_a3c.models import action_to_env, build_model
from distributed_a3c.policy_eval import greedy_action
from distributed_a3c.rl.normalize import RunningMeanStd

PROG = "a3c-eval"


def config_from_checkpoint(state: dict) -> Config:
    """The run's Config, from the plain dict a checkpoint stores."""
    merged = OmegaConf.merge(OmegaConf.structured(Config), state.get("config") or {})
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, Config)
    return cfg


def load_policy(state: dict, cfg: Config, env) -> tuple[torch.nn.Module, RunningMeanStd | None]:
    """The checkpoint's model (eval mode) for `env`'s spaces, and its observation statistics if it kept any."""
    model = build_model(cfg, env.observation_space, env.action_space)
    model.load_state_dict(state["model"])
    model.eval()
    obs_stats = RunningMeanStd.from_state_dict(state["obs_stats"]) if state.get("obs_stats") else None
    return model, obs_stats


@torch.inference_mode()
def evaluate(
    checkpoint: Path, episodes: int, sample: bool = False, seed: int = 12345, video_dir: Path | None = None
) -> list[float]:
    """Returns of `episodes` full episodes of the checkpoint's policy."""
    state = load_run_checkpoint(checkpoint)
    cfg = config_from_checkpoint(state)
    cfg.env.atari.terminal_on_life_loss = False
    if video_dir is not None:
        cfg.env.kwargs = {**cfg.env.kwargs, "render_mode": "rgb_array"}
    env = make_env_fn(cfg.env)()
    if video_dir is not None:
        import gymnasium as gym

        env = gym.wrappers.RecordVideo(env, str(video_dir), episode_trigger=lambda _: True, disable_logger=True)
    model, obs_stats = load_policy(state, cfg, env)
    recurrent = model.is_recurrent
    torch.manual_seed(seed)
    returns: list[float] = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        rnn_state = model.initial_state(1, torch.device("cpu")) if recurrent else None
        starts = torch.ones(1, dtype=torch.bool)
        total, done = 0.0, False
        while not done:
            x = obs_stats.normalize(obs) if obs_stats is not None else np.asarray(obs)
            x = torch.as_tensor(x).unsqueeze(0)
            if recurrent:
                dist_inputs, _, rnn_state = model.step(x, rnn_state, starts)
                starts = torch.zeros(1, dtype=torch.bool)
            else:
                dist_inputs, _ = model(x)
            action = model.sample(dist_inputs) if sample else greedy_action(model, dist_inputs)
            obs, reward, terminated, truncated, info = env.step(action_to_env(action, env.action_space)[0])
            total += float(reward)
            done = terminated or truncated
        # RecordEpisodeStatistics holds the raw score (Atari rewards seen here may be clipped).
        raw = info.get("episode", {}).get("r")
        returns.append(float(np.asarray(raw).item()) if raw is not None else total)
        print(f"episode {episode + 1}/{episodes}: return {returns[-1]:.1f}", flush=True)
    env.close()
    return returns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a run directory (uses its checkpoint.pt) or a checkpoint file")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to run (default 10)")
    parser.add_argument("--sample", action="store_true", help="sample actions instead of acting greedily")
    parser.add_argument("--seed", type=int, default=12345, help="seed of episode 0; episode i uses seed + i")
    parser.add_argument("--video", type=Path, default=None, help="record every episode as mp4 into this directory")
    args = parser.parse_args(argv)
    checkpoint = args.path / "checkpoint.pt" if args.path.is_dir() else args.path
    if args.video is not None and importlib.util.find_spec("moviepy") is None:
        print(f"{PROG}: error: --video needs moviepy: pip install 'distributed_a3c[video]'", file=sys.stderr)
        return 2
    if args.episodes < 1:
        print(f"{PROG}: error: --episodes={args.episodes} is invalid: must be >= 1", file=sys.stderr)
        return 2
    try:
        returns = evaluate(checkpoint, args.episodes, args.sample, args.seed, args.video)
    except (FileNotFoundError, KeyError, ValueError, ImportError) as e:
        print(f"{PROG}: error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        return 2
    summary = {
        "checkpoint": str(checkpoint),
        "episodes": len(returns),
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "min_return": float(np.min(returns)),
        "max_return": float(np.max(returns)),
        "greedy": not args.sample,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
