"""Every option of every config group composes (Hydra compose API) into a validated `Config`; bad values
fail with a ConfigError naming each key and value; composition errors are one line naming the key."""

from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import distributed_a3c.train as train  # registers `config_schema` in Hydra's ConfigStore
from distributed_a3c.build import pushes_per_step
from distributed_a3c.config import Config, ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and any(p.glob("*.yaml")))
APPENDED = ("experiment", "hparams_search")  # not in config.yaml's defaults: added with +group=option
PLAIN_GROUPS = [g for g in GROUPS if g not in APPENDED]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("config", overrides=overrides)


def _override(group: str, name: str) -> str:
    return f"+{group}={name}" if group in APPENDED else f"{group}={name}"


def _default_option(group: str) -> str | None:
    defaults = yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]
    for entry in defaults:
        if isinstance(entry, dict) and group in entry:
            return entry[group]
    return None


def _candidates(group: str, name: str):
    """Overrides that select `group=name`, first alone (the defaults for the rest), then with other options
    of the other groups, defaults first: some options only make sense together (an image env + model=cnn)."""
    others = [g for g in PLAIN_GROUPS if g != group]
    choices = []
    for g in others:
        names = [p.stem for p in sorted((CONF / g).glob("*.yaml"))]
        default = _default_option(g)
        choices.append([default, *(n for n in names if n != default)] if default in names else names)
    for combo in itertools.product(*choices):
        extra = [f"{g}={n}" for g, n in zip(others, combo, strict=True) if n != _default_option(g)]
        yield [*extra, _override(group, name)]


def _package(path: Path, group: str) -> str:
    """Where the file's keys land: `# @package _global_` at the root, else under the group name."""
    for line in path.read_text().splitlines():
        m = re.match(r"#\s*@package\s+(\S+)", line.strip())
        if m:
            return "" if m.group(1) == "_global_" else m.group(1)
        if line.strip() and not line.startswith("#"):
            break
    return group


def _leaves(node, prefix: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            if prefix == "" and k in ("defaults", "hydra"):  # the defaults list; Hydra's own settings
                continue
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], node


def _lookup(obj, dotted: str):
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def _same(expected, actual) -> bool:
    if isinstance(actual, float) and isinstance(expected, int | float | str):
        return float(expected) == actual
    return expected == actual


def _keys_set_by_env_preset(overrides: list[str]) -> set[str]:
    """Dotted keys the env preset of this composition sets (env presets are `# @package _global_`)."""
    env = next((o.split("=", 1)[1] for o in overrides if o.startswith("env=")), _default_option("env"))
    values = OmegaConf.to_container(OmegaConf.load(CONF / "env" / f"{env}.yaml"), resolve=True)
    return {key for key, _ in _leaves(values or {})}


def test_env_presets_can_tune_the_optimizer():
    """The defaults list puts env/ after optim/: a preset's optim.lr beats the optimizer file's."""
    cfg = train.to_config(_compose([]))
    preset = OmegaConf.load(CONF / "env" / f"{_default_option('env')}.yaml")
    assert cfg.optim.lr == float(preset.optim.lr)
    assert cfg.optim.lr != float(OmegaConf.load(CONF / "optim" / "adam.yaml").lr)


def test_every_group_is_discovered():
    assert {"env", "model", "optim", "logger"} <= set(GROUPS)
    assert len(OPTIONS) >= 8


@pytest.mark.parametrize(("group", "name"), OPTIONS, ids=[f"{g}={n}" for g, n in OPTIONS])
def test_every_option_composes_into_a_valid_config(group, name):
    path = CONF / group / f"{name}.yaml"
    failures = []
    cfg = None
    for overrides in _candidates(group, name):
        dcfg = _compose(overrides)
        try:
            cfg = train.to_config(dcfg)
        except ConfigError as e:  # an incompatible pair must be a clear ConfigError, nothing else
            failures.append(f"{overrides}: {e}")
            continue
        break
    assert cfg is not None, "no combination of the other groups validates:\n" + "\n".join(failures)
    assert isinstance(cfg, Config)
    # Every value the file sets reached the Config; the only group allowed to override another's values is
    # env/, which conf/config.yaml lists after model/ and optim/ so that env presets can tune them.
    values = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    package = _package(path, group)
    prefix = f"{package}." if package else ""
    tuned_by_env = set() if group in ("env", "experiment") else _keys_set_by_env_preset(overrides)
    for key, expected in _leaves(values or {}):
        if prefix + key in tuned_by_env:
            continue
        actual = _lookup(cfg, prefix + key)
        if dataclasses.is_dataclass(actual):
            actual = dataclasses.asdict(actual)
        assert _same(expected, actual), f"{prefix}{key}: file says {expected!r}, composed config has {actual!r}"


def test_defaults_compose_into_a_valid_config():
    cfg = train.to_config(_compose([]))
    assert isinstance(cfg, Config)
    assert cfg.env.id == "CartPole-v1"


BAD_VALUES = [
    ("workers", "0", 0),
    ("worker.envs_per_worker", "0", 0),
    ("worker.rollout_len", "0", 0),
    ("optim.lr", "0", 0.0),
    ("algo.gamma", "0", 0.0),
    ("algo.gamma", "1.5", 1.5),
    ("env.id", "NoSuchEnv-v0", "NoSuchEnv-v0"),
    ("rpc.transports", "[ibv]", ["ibv"]),  # no transport every pair of ranks can use
    ("rpc.transports", "[shm,tcp]", ["shm", "tcp"]),
    ("rpc.transports", "[uv,uv]", ["uv", "uv"]),
    ("rpc.channels", "[cma]", ["cma"]),  # no channel every pair of ranks can use
    ("rpc.channels", "[basic,gpu]", ["basic", "gpu"]),
]


def _names(message: str, key: str, raw: str, typed) -> bool:
    return any(f"{key}={shown}" in message for shown in (raw, repr(typed)))


@pytest.mark.parametrize(("key", "raw", "typed"), BAD_VALUES, ids=[f"{k}={r}" for k, r, _ in BAD_VALUES])
def test_bad_value_raises_config_error_naming_key_and_value(key, raw, typed):
    dcfg = _compose([f"{key}={raw}"])
    with pytest.raises(ConfigError) as info:
        train.to_config(dcfg)
    message = str(info.value)
    assert _names(message, key, raw, typed), message
    assert "\n" not in message


def test_several_bad_values_are_all_reported_at_once():
    first_per_key = {k: (k, r, t) for k, r, t in reversed(BAD_VALUES)}  # one value per key: the first listed
    bad = list(first_per_key.values())
    dcfg = _compose([f"{k}={r}" for k, r, _ in bad])
    with pytest.raises(ConfigError) as info:
        train.to_config(dcfg)
    message = str(info.value)
    for key, raw, typed in bad:
        assert _names(message, key, raw, typed), (key, message)


def _precheck_error(overrides: list[str], capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        train.precheck(overrides)
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_unknown_key_is_one_line_naming_the_key(capsys):
    line = _precheck_error(["optim.lrr=0.1"], capsys)
    assert "optim.lrr" in line
    assert "lr" in line.replace("lrr", "")  # says which keys are allowed


def test_bad_type_is_one_line_naming_the_key(capsys):
    line = _precheck_error(["train.total_env_steps=abc"], capsys)
    assert "train.total_env_steps" in line
    assert "abc" in line


def test_precheck_reports_rule_violations_in_one_line(capsys):
    line = _precheck_error(["workers=0", "optim.lr=-1"], capsys)
    assert "workers=0" in line
    assert "optim.lr=-1" in line


def test_precheck_returns_the_config_when_valid(capsys):
    cfg = train.precheck(["workers=3", "optim=rmsprop"])
    assert (cfg.workers, cfg.optim.name) == (3, "rmsprop")
    assert capsys.readouterr().err == ""


def test_the_dataclass_defaults_are_the_default_job():
    """`Config()` (evaluation, tests, the serial runner) holds what `a3c-train` with no overrides runs."""
    assert OmegaConf.to_object(_compose([])) == Config()


@pytest.mark.parametrize(("workers", "envs", "pushes"), [(2, 16, 1), (8, 4, 4), (16, 2, 8)])
def test_the_pong_preset_steps_on_its_tuned_batch_whatever_the_envs_per_worker(
    workers: int, envs: int, pushes: int
) -> None:
    cfg = train.to_config(_compose(["+experiment=pong", f"workers={workers}", f"worker.envs_per_worker={envs}"]))
    assert pushes_per_step(cfg, workers) == pushes
    assert pushes * cfg.worker.rollout_len * envs == cfg.scale.reference_batch == 80
