"""The torchrun wrapper (trainflow_trainer/torchrun.py): a rank's protocol exit code (2 bad input, 75 preempted)
reaches the launcher although torchrun itself exits 1. The mapping as a pure function, the record files, and
real 2-rank torchrun jobs over gloo (tests/exit_worker.py) through the wrapper."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TRAINER_DIR, job_env

from trainflow_trainer.contract import BAD_INPUT_PREFIX, EXIT_BAD_INPUT, EXIT_PREEMPTED
from trainflow_trainer.torchrun import (
    NODE_EXIT_FILE_ENV,
    RANK_EXIT_DIR_ENV,
    RankExit,
    job_exit_code,
    read_exits,
    record_exit,
)

WORKER = str(Path(__file__).with_name("exit_worker.py"))


def test_a_bad_input_on_any_rank_wins_over_crashes_and_preemptions() -> None:
    bad1 = RankExit(1, EXIT_BAD_INPUT, "rank 1's data")
    bad3 = RankExit(3, EXIT_BAD_INPUT, "rank 3's data")
    pre0 = RankExit(0, EXIT_PREEMPTED, "preempted")
    assert job_exit_code(1, [bad3, pre0, bad1]) == (EXIT_BAD_INPUT, bad1)  # the lowest rank names it
    assert job_exit_code(1, [pre0]) == (EXIT_PREEMPTED, pre0)
    assert job_exit_code(1, []) == (1, None)  # a crash (a rank killed by a signal) stays a crash: retried
    assert job_exit_code(0, [bad1]) == (0, None)  # torchrun succeeded: every rank did
    assert job_exit_code(2, []) == (2, None)  # torchrun's own usage error (argparse) passes through


def test_records_are_written_only_under_the_wrapper_and_only_for_protocol_codes(tmp_path: Path) -> None:
    env = {RANK_EXIT_DIR_ENV: str(tmp_path), "RANK": "5"}
    record_exit(EXIT_BAD_INPUT, "x.jsonl:2: invalid JSON", env)
    record_exit(1, "a crash is not recorded", {**env, "RANK": "6"})
    record_exit(EXIT_PREEMPTED, "", {"RANK": "7"})  # no folder: a one-process job or plain torchrun
    (tmp_path / "rank-9.json").write_text('{"rank": 9, "co')  # torn: skipped
    assert read_exits(tmp_path) == [RankExit(5, EXIT_BAD_INPUT, "x.jsonl:2: invalid JSON")]


def _job(actions: list[str], node_file: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "trainflow_trainer.torchrun", "--standalone", "--nproc-per-node=2", WORKER, *actions]
    env = {**job_env(), NODE_EXIT_FILE_ENV: str(node_file)}  # as the Slurm launcher asks of every node
    return subprocess.run(cmd, cwd=TRAINER_DIR, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("actions", "code", "reason"),
    [
        # rank 1 alone meets a bad input; rank 0 is stuck in a collective and is stopped by torchrun
        (["wait", "bad"], EXIT_BAD_INPUT, "invalid JSON (seen by rank 1) (rank 1)"),
        # rank 0 killed by a signal while rank 1 exits 2: still a bad input
        (["kill", "bad"], EXIT_BAD_INPUT, "invalid JSON (seen by rank 1) (rank 1)"),
        # kill -9 of one rank, nothing recorded: torchrun's failure, retried as a crash
        (["kill", "wait"], 1, None),
    ],
)
def test_a_real_two_rank_torchrun_job_exits_with_its_ranks_protocol_code(
    actions: list[str], code: int, reason: str | None, tmp_path: Path
) -> None:
    r = _job(actions, tmp_path / "node-0.exit")
    assert r.returncode == code, r.stderr[-3000:]
    assert (tmp_path / "node-0.exit").read_text() == f"{code}\n"  # the node's code, for the Slurm batch script
    bad_lines = [ln for ln in r.stderr.splitlines() if ln.startswith(BAD_INPUT_PREFIX)]
    if reason is None:
        assert bad_lines == []
    else:
        assert bad_lines[-1].endswith(reason)  # the line the job activity reports is the wrapper's, last


def test_a_preempted_job_exits_75_though_torchrun_stops_its_ranks_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM to the job's process group (the local launcher's cancel; Slurm's --signal): torchrun's agent raises
    SignalException and reports no worker's code; the ranks' records still make the job's 75."""
    cmd = [sys.executable, "-m", "trainflow_trainer.torchrun", "--standalone", "--nproc-per-node=2", WORKER]
    p = subprocess.Popen(
        [*cmd, "term", "term"],
        cwd=TRAINER_DIR,
        env=job_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert p.stdout is not None
        seen = ""
        while seen.count("ready") < 2:  # both ranks write to one pipe: their lines may interleave
            line = p.stdout.readline()
            assert line, seen
            seen += line
        assert seen.replace("ready", "").strip() == "", seen
        os.killpg(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == EXIT_PREEMPTED, err[-3000:]
    assert "SignalException" in err  # torchrun's own path, which carries no worker codes
