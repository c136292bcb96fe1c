"""Entry point: `a3c-train [overrides]` or `torchrun ... -m distributed_a3c.train [overrides]`.

The only module that touches Hydra. Under torchrun, global ranks 0..server.shards-1 serve parameters
(rank 0 also logs and checkpoints) and every other rank is a worker. Outside torchrun, this process
starts a local job (server.shards servers + `workers` workers) through torchrun's launcher API, all
writing to the run directory this process chose.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from distributed_a3c import sweep
from distributed_a3c.config import Config, ConfigError, unused_options
from distributed_a3c.distributed.supervise import record_exit, say_line
from distributed_a3c.envs import validate_all

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
PROG = "a3c-train"

ConfigStore.instance().store(name="config_schema", node=Config)


def _torchrun_rank() -> int | None:
    """Global rank when launched by torchrun, else None."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ:
        return int(os.environ["RANK"])
    return None


def to_config(dcfg: DictConfig) -> Config:
    """The composed DictConfig as a validated `Config` dataclass."""
    unknown = _unknown_keys(dcfg, Config)
    if unknown:
        raise ConfigError("; ".join(unknown))
    cfg = OmegaConf.to_object(dcfg)
    assert isinstance(cfg, Config)
    validate_all(cfg)
    error = _spaces_error(repr((cfg.env, cfg.model)), cfg)
    if error:
        raise ConfigError(error)
    return cfg


_spaces_checked: dict[str, str | None] = {}


def _spaces_error(key: str, cfg: Config) -> str | None:
    """worker.spaces_error builds an env and a model (seconds for Atari): once per process per env/model."""
    if key not in _spaces_checked:
        from distributed_a3c.models import spaces_error

        _spaces_checked[key] = spaces_error(cfg)
    return _spaces_checked[key]


def _fail(message: str, code: int = 2) -> None:
    record_exit(code, message)
    rank = _torchrun_rank()
    multinode = int(os.environ.get("GROUP_WORLD_SIZE", "1")) > 1
    where = f" (rank {rank} on {socket.gethostname()})" if rank is not None and (rank != 0 or multinode) else ""
    say_line(f"{PROG}: error{where}: {message}")
    sys.exit(code)


def _composition_error(exc: BaseException) -> str:
    """Hydra/OmegaConf errors come as several lines; say in one which key is wrong and what is allowed."""
    from omegaconf.errors import OmegaConfBaseException, ValidationError

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ValidationError) and cause.full_key:
            return f"{cause.full_key}: {str(cause).splitlines()[0]}"
        if isinstance(cause, OmegaConfBaseException) and isinstance(cause, KeyError | AttributeError):
            node_type = getattr(cause, "object_type", None)
            if dataclasses.is_dataclass(node_type):
                return _unknown_key_message(cause.full_key or cause.key, node_type)
        cause = cause.__cause__
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("full_key:", "reference_type", "object_type"))]
    if "Config search path:" in lines:  # a missing group option: the search path is noise here
        lines = lines[: lines.index("Config search path:")]
    return " ".join(lines)


def _unknown_key_message(key: str, node_type: type) -> str:
    allowed = ", ".join(f.name for f in dataclasses.fields(node_type))
    return f"unknown config key {key!r}: the keys allowed here are {allowed}"


def _unknown_keys(node: Any, node_type: type, prefix: str = "") -> list[str]:
    """Keys of `node` that its dataclass does not declare (Hydra lets `+key=value` add them)."""
    fields = {f.name: f for f in dataclasses.fields(node_type)}
    errors = []
    for key in node:
        full = f"{prefix}{key}"
        if key not in fields:
            errors.append(_unknown_key_message(full, node_type))
            continue
        child_type = type(getattr(node_type(), key)) if _has_default(fields[key]) else None
        if child_type is not None and dataclasses.is_dataclass(child_type):
            errors += _unknown_keys(node[key], child_type, f"{full}.")
    return errors


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def precheck(overrides: list[str]) -> Config:
    """Compose and validate the config before anything starts, so bad input fails fast on every rank."""
    from hydra import compose, initialize_config_dir

    user = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            dcfg = compose(config_name="config", overrides=user)
    except Exception as e:
        _fail(_composition_error(e))
    try:
        return to_config(dcfg)
    except ConfigError as e:
        _fail(str(e))
    except Exception as e:  # OmegaConf type errors surface at to_object for some values
        _fail(_composition_error(e))
    raise AssertionError("unreachable")


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((os.environ.get("MASTER_ADDR", "127.0.0.1"), port))
        except OSError as e:
            raise ConfigError(
                f"rpc.port={port} is invalid: the port is already in use ({e.strerror}); choose a free "
                "port, distinct from torchrun's rendezvous port, or leave rpc.port=null to reuse its store"
            ) from None


def _run_rank(cfg: Config, rank: int, run_dir: Path, config_dict: dict[str, Any]) -> int:
    from distributed_a3c.build import fit_to_workers
    from distributed_a3c.distributed.roles import run_aggregator, run_server, run_shard, run_worker
    from distributed_a3c.server.placement import PlacementError, plan

    world_size = int(os.environ["WORLD_SIZE"])
    s = cfg.server
    try:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        layout = plan(
            world_size, s.shards, s.placement, s.node_aggregate, local, int(os.environ.get("GROUP_WORLD_SIZE", 1))
        )
    except PlacementError as e:
        raise ConfigError(str(e)) from None
    cfg = fit_to_workers(cfg, len(layout.workers))
    role = layout.role(rank)
    if role == "shard" and rank != 0:
        return run_shard(cfg, rank, world_size, layout)
    if rank == 0:
        if cfg.rpc.port is not None:
            _check_port_free(cfg.rpc.port)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config_dict))
        return run_server(cfg, world_size, run_dir, config_dict, layout)
    if role == "aggregator":
        return run_aggregator(cfg, rank, world_size, layout)
    return run_worker(cfg, rank, world_size, layout)


def _exit_now(code: int) -> NoReturn:
    """Exit with `code` once the logs are flushed, skipping the interpreter's teardown (0.3-0.5 s of torch's)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def rank_main(cfg: Config, run_dir: Path, config_dict: dict[str, Any]) -> int:
    """One rank of the job (rank from torchrun's environment); bad input ends it with one line."""
    from distributed_a3c.distributed.rpc import PeerLost
    from distributed_a3c.distributed.signals import install_signal_handlers, terminated_by_launcher

    rank = int(os.environ["RANK"])
    install_signal_handlers(rank)
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        code = _run_rank(cfg, rank, run_dir, config_dict)
        record_exit(code)
        if terminated_by_launcher():
            # The launcher that sent SIGTERM will not collect our return value: don't wait for it.
            _exit_now(code)
        return code
    except KeyboardInterrupt:
        _fail("interrupted twice: stopped without waiting for the workers", code=130)
    except ConfigError as e:
        _fail(str(e))
    except PeerLost as e:
        _fail(str(e), code=1)
    except Exception as e:
        logging.getLogger(__name__).debug("rank %d failed", rank, exc_info=True)
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        _fail(f"{type(e).__name__}: {first_line}", code=1)
    return 1


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
def _hydra_main(dcfg: DictConfig) -> float | None:
    """One job: the run's ranks (under torchrun, this rank). In a sweep (`-m`), its objective."""
    multirun = sweep.is_multirun()
    try:
        cfg = to_config(dcfg)
    except ConfigError as e:
        if multirun:
            return sweep.record_failure(f"has a bad config: {e}")
        _fail(str(e))
    run_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    if multirun:
        sweep.name_the_job(cfg)
    config_dict = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True) if multirun else None
    config_dict = config_dict or OmegaConf.to_container(dcfg, resolve=True)
    if _torchrun_rank() in (None, 0):  # said once, by the process that reports for the job
        for line in unused_options(cfg, Config()):
            print(f"{PROG}: warning: {line}", file=sys.stderr, flush=True)
    if _torchrun_rank() is None:
        from distributed_a3c.distributed.launch import launch_local

        shards = cfg.server.shards
        servers = "1 parameter server" if shards == 1 else f"{shards} parameter-server shards"
        print(f"{PROG}: {servers} + {cfg.workers} workers on this machine; run dir {run_dir}", flush=True)
        code = launch_local(job_ranks(cfg), cfg.train.max_restarts, rank_main, cfg, run_dir, config_dict)
        if not multirun or code in (128 + 2, 128 + 15):  # Ctrl-C or SIGTERM also ends a sweep, after this job
            # The ranks have exited and written everything: nothing is left for a slow teardown to save.
            _exit_now(code)
        if code != 0:
            return sweep.record_failure(f"exited with code {code} (run dir {run_dir})")
        return sweep.objective_of(run_dir)
    sys.exit(rank_main(cfg, run_dir, config_dict))


def job_ranks(cfg: Config) -> int:
    """Ranks a job of `cfg.workers` workers needs: its server shards, its workers and, with
    server.node_aggregate, one aggregator (`workers` still counts the workers)."""
    return cfg.server.shards + int(cfg.server.node_aggregate) + cfg.workers


def _run_dir_arg(args: list[str]) -> str | None:
    given = [a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")]
    return given[-1] if given else None


def _check_writable(run_dir: Path) -> None:
    """One line, before anything starts, when the run directory cannot be created or written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        _fail(
            f"hydra.run.dir={str(run_dir)!r} is not writable: {e.strerror or e}; choose a directory this user can write"
        )


def _default_run_dir() -> str:
    """What conf/config.yaml's hydra.run.dir resolves to now (outputs/<date>/<time>), absolute."""
    return os.path.abspath(datetime.datetime.now().strftime("outputs/%Y-%m-%d/%H-%M-%S"))


def _precheck_sweep(args: list[str]) -> None:
    """Before the first job of `-m`: the sweeper plugin is there, and every basic combination composes."""
    if _torchrun_rank() is not None:
        _fail("-m (multirun) runs whole jobs one after another through a3c-train; it cannot run under torchrun")
    overrides = [a for a in args if not a.startswith("-")]
    wants_optuna = any("optuna" in a or a.lstrip("+").startswith("hparams_search=") for a in overrides)
    if wants_optuna and importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        _fail("the Optuna sweeper is not installed: pip install 'distributed_a3c[sweep]'")
    for job in sweep.sweep_combinations(overrides):
        precheck(job)


def main() -> None:
    args = sys.argv[1:]
    plain_run = not any(a.startswith("-") for a in args)  # leave --help, --cfg, -m ... to Hydra itself
    multirun = any(a in ("-m", "--multirun") for a in args)
    if plain_run:
        precheck(args)
    elif multirun:
        _precheck_sweep(args)
    rank = _torchrun_rank()
    if plain_run and rank in (None, 0):
        run_dir = _run_dir_arg(args)
        if run_dir is None and rank == 0:
            # Restarts of this torchrun job must find the same run directory (and its checkpoint).
            from distributed_a3c.distributed.rendezvous import claim_run_dir

            run_dir = claim_run_dir(_default_run_dir())
            sys.argv.append(f"hydra.run.dir={run_dir}")
        _check_writable(Path(run_dir) if run_dir else Path("outputs"))
    if rank is not None and rank != 0:
        # Workers write nothing: only rank 0 owns the run directory.
        logging.basicConfig(level=logging.WARNING, format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s")
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
        sys.argv.append("hydra.run.dir=.")  # last wins: not even the user's run directory is made here
    _hydra_main()
    if multirun:
        sweep.report_and_exit()


if __name__ == "__main__":
    main()
