"""The real trainer job (trainflow_trainer.job) with one rank's data swapped, for the 2-rank bad-input test
(test/pipeline/rank-bad-input.test.ts): ranks on different hosts read their own disks, so one rank can meet a
broken file the others never see; on one test host this script stands in for that host's disk.

    python -m trainflow_trainer.torchrun --standalone --nproc-per-node 2 tests/rank_input_worker.py --spec SPEC

On rank RANK_INPUT_RANK (env) every data source of the stage reads RANK_INPUT_PATH (env) instead; every other
rank runs the spec as it is.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from trainflow_trainer.job import main


def rank_spec(spec_path: str) -> str:
    """This rank's spec: the job's own, or a copy whose data sources read RANK_INPUT_PATH."""
    if os.environ.get("RANK") != os.environ["RANK_INPUT_RANK"]:
        return spec_path
    spec = json.loads(Path(spec_path).read_text())
    for source in spec["stage"]["data"]["sources"]:
        source["path"] = os.environ["RANK_INPUT_PATH"]
    out = Path(spec_path).with_name(f"spec-rank-{os.environ['RANK']}.json")
    out.write_text(json.dumps(spec))
    return str(out)


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(["--spec", rank_spec(args[args.index("--spec") + 1])]))
