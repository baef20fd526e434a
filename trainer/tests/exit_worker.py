"""One rank of a 2-rank torchrun job for test_torchrun_exit.py: the ranks meet over gloo, then each does what
argv says for its rank, through the job entry's own exit paths (job.py bad_input, the recorded protocol code):

    python -m trainflow_trainer.torchrun --standalone --nproc-per-node 2 tests/exit_worker.py ACTION0 ACTION1

ACTION: `bad` (a bad input: prints the reason, records 2, exits 2), `kill` (SIGKILL to itself), `wait` (blocks
in a collective the others never join, as a healthy rank does when its peer is gone), `term` (waits for SIGTERM,
then ends as a preempted job does: records 75, exits 75), `ok` (exits 0).
"""

from __future__ import annotations

import os
import signal
import sys

import torch
import torch.distributed as dist

from trainflow_trainer.contract import EXIT_PREEMPTED
from trainflow_trainer.job import bad_input
from trainflow_trainer.torchrun import record_exit


def main() -> int:
    rank = int(os.environ["RANK"])
    action = sys.argv[1 + rank]
    dist.init_process_group("gloo")
    t = torch.ones(1)
    dist.all_reduce(t)  # both ranks are up before either acts
    if action == "bad":
        return bad_input(f"data.jsonl:3: invalid JSON (seen by rank {rank})")
    if action == "term":
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])  # taken by sigwait, not the default handler
        print("ready", flush=True)  # the test sends SIGTERM to the job's process group once both ranks say so
        signal.sigwait([signal.SIGTERM])
        record_exit(EXIT_PREEMPTED, "preempted")
        return EXIT_PREEMPTED
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "wait":
        dist.all_reduce(t)  # the peer never joins: fails when it is gone, or torchrun stops this rank
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
