"""torchrun that keeps the job protocol's exit codes: what every launcher runs for a multi-rank trainer job.

    python -m trainflow_trainer.torchrun [torchrun flags] -m trainflow_trainer.job --spec SPEC.json

torchrun's elastic agent exits 1 whenever a worker fails, whatever the worker's code was, so a bad input (2) in
one rank would reach the job activity as a crash and be retried, and a preemption (75) as a failure. Each rank
that ends with a protocol code records it (`record_exit`, called by job.py) as `rank-<RANK>.json` in a folder
this wrapper makes and hands down as TRAINFLOW_RANK_EXIT_DIR; when torchrun fails, the wrapper exits with the
recorded code instead (`job_exit_code`).

Why our own files and not torchelastic's error files (TORCHELASTIC_ERROR_FILE, `@record`): the agent reads
those only on its ChildFailedError path; on SIGTERM (a preemption: Slurm's --signal, a pod's deletion, the
local launcher's cancel) it raises SignalException, stops the workers and reports none of their results, and
the error file's layout is torch's internal business. A record file survives every path.

Which code wins, whatever order the ranks ended in: a bad input on any rank (a retry meets it again; the other
ranks typically die of it, by a broken collective or torchrun's SIGTERM/SIGKILL), then a preemption, then
torchrun's own code; among ranks that recorded the winning code, the lowest names the reason. When every rank
meets the same bad input, which ranks record it before torchrun stops the rest is a race, so the reason may
come from any of them; the code does not depend on it.
On several nodes each node's wrapper decides for its own ranks, and the launcher combines the nodes' codes the
same way (Slurm: TRAINFLOW_NODE_EXIT_FILE, read by the batch script; Kubernetes: the pods' exit codes).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

from .contract import BAD_INPUT_PREFIX, EXIT_BAD_INPUT, EXIT_PREEMPTED

RANK_EXIT_DIR_ENV = "TRAINFLOW_RANK_EXIT_DIR"
# where a node's wrapper writes the node's code when the launcher asks (Slurm: srun reports the highest code of
# all nodes, so the batch script reads the nodes' own; src/launchers/slurm.ts)
NODE_EXIT_FILE_ENV = "TRAINFLOW_NODE_EXIT_FILE"
# the protocol codes a rank records, in the order they win over each other
RECORDED_CODES = (EXIT_BAD_INPUT, EXIT_PREEMPTED)


@dataclass(frozen=True)
class RankExit:
    rank: int
    code: int
    reason: str


def record_exit(code: int, reason: str = "", env: dict[str, str] | None = None) -> None:
    """Called by a rank as it ends with `code`: records it when it is a protocol code and the rank runs under
    this wrapper (TRAINFLOW_RANK_EXIT_DIR set); a one-process job or plain torchrun records nothing."""
    env = dict(os.environ) if env is None else env
    folder = env.get(RANK_EXIT_DIR_ENV)
    if not folder or code not in RECORDED_CODES:
        return
    rank = int(env.get("RANK", "0"))
    final = Path(folder) / f"rank-{rank}.json"
    tmp = final.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rank": rank, "code": code, "reason": reason}))
    tmp.replace(final)  # whole or absent: the wrapper never reads half a record


def read_exits(folder: Path) -> list[RankExit]:
    """The records in `folder`; a torn or foreign file is skipped (it cannot change a crash into a stop)."""
    out: list[RankExit] = []
    for p in sorted(folder.glob("rank-*.json")):
        try:
            d = json.loads(p.read_text())
            out.append(RankExit(int(d["rank"]), int(d["code"]), str(d.get("reason", ""))))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def job_exit_code(torchrun_code: int, exits: list[RankExit]) -> tuple[int, RankExit | None]:
    """The job's exit code from torchrun's and the ranks' records, and the record that decided it (None: torchrun's
    own code stands). A torchrun that succeeded succeeded: a rank's record cannot fail it."""
    if torchrun_code == 0:
        return 0, None
    for code in RECORDED_CODES:
        ranks = sorted((e for e in exits if e.code == code), key=lambda e: e.rank)
        if ranks:
            return code, ranks[0]
    return torchrun_code, None


def run_torchrun(argv: list[str]) -> int:
    """torchrun's CLI in this process (so signals reach its agent as they would reach `torchrun`): its exit code."""
    from torch.distributed.run import main as torchrun_main

    try:
        torchrun_main(argv)
    except SystemExit as e:  # argparse: a usage error
        return e.code if isinstance(e.code, int) else 1
    except BaseException as e:  # noqa: BLE001 - ChildFailedError (already summarised by torchrun), SIGTERM, ...
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

        if not isinstance(e, ChildFailedError):
            traceback.print_exc()
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    folder = Path(tempfile.mkdtemp(prefix="trainflow-ranks-"))
    os.environ[RANK_EXIT_DIR_ENV] = str(folder)  # torchrun hands its environment down to every rank
    try:
        torchrun_code = run_torchrun(sys.argv[1:] if argv is None else argv)
        code, decided = job_exit_code(torchrun_code, read_exits(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    node_file = os.environ.get(NODE_EXIT_FILE_ENV)
    if node_file:
        tmp = Path(f"{node_file}.tmp")
        tmp.write_text(f"{code}\n")
        tmp.replace(node_file)
    if decided is not None and code == EXIT_BAD_INPUT:
        # the last such line of the log is the one the job activity reports
        print(f"{BAD_INPUT_PREFIX}{decided.reason} (rank {decided.rank})", file=sys.stderr, flush=True)
    elif decided is not None:
        print(f"trainflow: rank {decided.rank} ended with exit code {code}: exiting {code}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
