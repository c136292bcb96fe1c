"""A thin supervisor around one node's torchrun agent: once the job is over for this node, nothing waits.

    python -m distributed_a3c.distributed.supervise [--grace-s 30] -- torchrun --nnodes=2 ... -m distributed_a3c.train

torchrun's agent outlives its ranks when the job's other nodes are gone: it waits in its exit barrier for
agents that will never come (300 s), or heartbeats a rendezvous store it can no longer reach. A batch
scheduler then sees a job that never ends. The supervisor starts the agent, tags its environment so that
it can find the agent's ranks (each in a session of its own), and has every rank write how it ended. Once
ranks have run and none is left, the agent gets `--grace-s` to restart them (a torchrun restart) or to
exit; then it is stopped. The supervisor exits with what the ranks said: 0 when every rank of this node
exited 0 (the run reached its stop, or this node's workers left in good order), else the first failure's
code, with one line naming the rank and its cause.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

NODE_TAG = "A3C_NODE_TAG"
STATUS_DIR = "A3C_STATUS_DIR"
PROG = "a3c-supervise"


def say_line(line: str) -> None:
    """Write `line` to stderr in one write call: a node's ranks share one stderr, and two that fail at the same
    moment must not splice their lines (print writes a text and its newline in two calls, which an
    unbuffered stream passes on as two writes)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def record_exit(code: int, message: str | None = None) -> None:
    """Called by a rank as it exits: its code and its one-line cause, for the node's supervisor (if any)."""
    where, rank = os.environ.get(STATUS_DIR), os.environ.get("RANK")
    if not where or rank is None:
        return
    status = {"rank": int(rank), "code": int(code), "message": message}
    path = Path(where) / f"rank{rank}.json"
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(status))
        tmp.replace(path)
    except OSError:  # the supervisor's directory is gone: nobody is asking any more
        pass


def tagged_ranks(tag: str) -> list[int]:
    """Pids of running ranks (torchrun sets LOCAL_RANK in their environment) that carry the node's tag."""
    needle, is_rank = f"{NODE_TAG}={tag}".encode(), b"LOCAL_RANK="
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if needle in environ and any(v.startswith(is_rank) for v in environ) and stat[stat.rindex(")") + 2] != "Z":
            pids.append(int(entry.name))
    return pids


def verdict(statuses: list[dict], ranks_seen: int) -> tuple[int, str | None]:
    """(exit code, one line or None) from the ranks' own reports: 0 when every rank seen reported 0."""
    failed = sorted((s for s in statuses if s["code"] != 0), key=lambda s: s["rank"])
    if failed:
        first = failed[0]
        cause = first.get("message") or f"exit code {first['code']}"
        return first["code"], f"rank {first['rank']} exited with code {first['code']}: {cause}"
    if len(statuses) < ranks_seen:
        return 1, f"{ranks_seen - len(statuses)} rank(s) ended without a word (killed by a signal?)"
    return 0, None


class Supervisor:
    def __init__(self, cmd: list[str], grace_s: float, poll_s: float = 0.5) -> None:
        self.cmd, self.grace_s, self.poll_s = cmd, grace_s, poll_s
        self.tag = uuid.uuid4().hex
        self.status_dir = Path(tempfile.mkdtemp(prefix="a3c-node-"))
        self.host = socket.gethostname()

    def say(self, line: str) -> None:
        print(f"{PROG}: node {self.host}: {line}", file=sys.stderr, flush=True)

    def run(self) -> int:
        env = {**os.environ, NODE_TAG: self.tag, STATUS_DIR: str(self.status_dir)}
        agent = subprocess.Popen(self.cmd, env=env)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a scheduler's stop goes to the agent
            signal.signal(sig, lambda signum, _: agent.poll() is None and agent.send_signal(signum))
        try:
            return self._watch(agent)
        finally:
            shutil.rmtree(self.status_dir, ignore_errors=True)

    def _statuses(self) -> list[dict]:
        out = []
        for path in self.status_dir.glob("rank*.json"):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return out

    def _watch(self, agent: subprocess.Popen) -> int:
        seen: set[int] = set()
        over_since: float | None = None
        while True:
            code = agent.poll()
            alive = tagged_ranks(self.tag)
            if alive and over_since is not None:  # torchrun restarted the ranks: a new attempt
                over_since = None
                for path in self.status_dir.glob("rank*.json"):
                    path.unlink(missing_ok=True)
                seen.clear()
            seen.update(alive)
            if code is not None:
                if not seen:
                    return code  # the agent ended before any rank ran (bad input, no rendezvous)
                ranks_code, line = verdict(self._statuses(), len(seen))
                if line:
                    self.say(line)
                return ranks_code  # what the run did on this node, whatever the agent says of itself
            if seen and not alive:
                over_since = over_since or time.monotonic()
                if time.monotonic() - over_since >= self.grace_s:
                    return self._stop_agent(agent, len(seen))
            time.sleep(self.poll_s)

    def _stop_agent(self, agent: subprocess.Popen, ranks_seen: int) -> int:
        """This node's ranks are gone and its agent still waits (an exit barrier or a rendezvous with nodes
        that are gone): stop it, and exit with what the ranks said."""
        code, line = verdict(self._statuses(), ranks_seen)
        # SIGKILL, not SIGTERM: with no rank left the agent has nothing to shut down, and torchrun turns a
        # SIGTERM into a SignalException raised through its main (a traceback wall on a node that did fine).
        agent.kill()
        agent.wait()
        how = "exit 0" if code == 0 else f"exit {code}: {line}"
        self.say(
            f"this node's ranks ended {self.grace_s:g} s ago and torchrun's agent still waited "
            f"(for nodes that are gone); stopped it; {how}"
        )
        return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--grace-s", type=float, default=float(os.environ.get("A3C_AGENT_GRACE_S", 30)))
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the torchrun command line")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("give the torchrun command after --")
    if args.grace_s <= 0:
        parser.error(f"--grace-s={args.grace_s:g} is invalid: must be > 0")
    return Supervisor(cmd, args.grace_s).run()


if __name__ == "__main__":
    sys.exit(main())
