"""How peaked a checkpoint's discrete policy is, over the states of its own sampled play.

    .venv/bin/python scripts/policy_sharpness.py RUN_DIR_OR_CHECKPOINT [--states 3000] [--groups 0,0,1,2,1,2]

Prints the median probability of the most likely action and the median entropy. With --groups (one group
id per action, e.g. Pong's NOOP/FIRE, RIGHT/RIGHTFIRE, LEFT/LEFTFIRE as 0,0,1,2,1,2), also how often the
argmax over the actions falls in another group than the argmax over the groups' summed probabilities.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from distributed_a3c.checkpoint import load_run_checkpoint
from distributed_a3c.envs import make_env_fn
from distributed_a3c.evaluate import config_from_checkpoint, load_policy


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--states", type=int, default=3000)
    parser.add_argument("--groups", default=None, help="comma-separated group id of each action")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    state = load_run_checkpoint(args.path / "checkpoint.pt" if args.path.is_dir() else args.path)
    cfg = config_from_checkpoint(state)
    env = make_env_fn(cfg.env)()
    model, obs_stats = load_policy(state, cfg, env)
    groups = torch.tensor([int(g) for g in args.groups.split(",")]) if args.groups else None
    torch.manual_seed(args.seed)
    obs, _ = env.reset(seed=args.seed)
    top, entropy, other_group = [], [], 0
    for _ in range(args.states):
        x = obs_stats.normalize(obs) if obs_stats is not None else np.asarray(obs)
        logits, _ = model(torch.as_tensor(x).unsqueeze(0))
        probs = logits.softmax(-1)[0]
        top.append(float(probs.max()))
        entropy.append(float(model.distribution(logits).entropy()[0]))
        if groups is not None:
            summed = torch.zeros(int(groups.max()) + 1).index_add_(0, groups, probs)
            other_group += int(groups[probs.argmax()] != summed.argmax())
        obs, _, terminated, truncated, _ = env.step(int(torch.multinomial(probs, 1)))
        if terminated or truncated:
            obs, _ = env.reset()
    line = f"states {args.states}: top-action probability median {np.median(top):.2f}"
    line += f", entropy median {np.median(entropy):.2f}"
    if groups is not None:
        line += f", argmax in another group than the groups' argmax: {other_group / args.states:.1%}"
    print(line)


if __name__ == "__main__":
    main()
