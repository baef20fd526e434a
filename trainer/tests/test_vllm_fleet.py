"""A colocated vLLM engine in the data plane's fleet (src/dataplane/fleet.ts), on CPU: the fleet starts it from
the launch template the job builds (rl/rollouts.py `engines`, the command line of engines/vllm.py), takes it
back (vLLM's pause, then SIGSTOP of its whole process group: the API server and its engine-core child both
stop) and gives it back on new weights (SIGCONT, reload through vLLM's control: collective_rpc into our worker
extension, then resume), after which it serves again. One vLLM engine (40-240 s to start on a busy CPU host).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from test_vllm_engine import write_versions

from trainflow_trainer.contract.models import Inference
from trainflow_trainer.engines.base import http_json
from trainflow_trainer.rl.rollouts import engines

REPO = Path(__file__).resolve().parents[2]

# The fleet driven step by step: one PROBE line per state, a stdin line to go on.
PROBE = """
require('tsx/cjs');
const readline = require('node:readline');
const { Fleet, ProcessLauncher, shareOut } = require('./src/dataplane/fleet.ts');
const { UpstreamPool } = require('./src/dataplane/upstreams.ts');
const { engineControl } = require('./src/dataplane/engines.ts');
const t = JSON.parse(process.env.TEMPLATE);
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const out = (o) => process.stdout.write('PROBE ' + JSON.stringify(o) + '\\n');
(async () => {
  const fleet = new Fleet({
    launcher: new ProcessLauncher({ ...t, python: process.env.PROBE_PYTHON }),
    shares: shareOut(1, []),
    weights: { checkpoint: t.checkpoint, version: 0 },
    control: engineControl('vllm'),
    log: (l) => process.stderr.write(l + '\\n'),
  });
  const pool = new UpstreamPool(await fleet.start());
  fleet.attach(pool);
  out({ url: pool.upstreams[0].url.toString(), pid: fleet.pid(0) });
  await fleet.take([0]);
  out({ taken: fleet.serving() });
  await lines.next();
  fleet.setWeights({ checkpoint: process.env.NEXT_WEIGHTS, version: 1 });
  fleet.give([0]);
  while (fleet.serving() === 0) await new Promise((r) => setTimeout(r, 200));
  out({ serving: fleet.serving(), version: pool.upstreams[0].version });
  await lines.next();
  await fleet.close();
  out({ closed: true });
  process.exit(0);
})().catch((e) => { process.stderr.write(String(e.stack) + '\\n'); process.exit(1); });
"""


def probe_line(stdout: IO[str]) -> dict[str, Any]:
    for line in stdout:
        if line.startswith("PROBE "):
            return json.loads(line[6:])
    raise AssertionError("the fleet probe ended early (its log: fleet-probe.log)")


def group(pgid: int) -> dict[int, str]:
    """The processes of a process group and their states (/proc/PID/stat: R, S, T for stopped...)."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid:
                out[int(d.name)] = fields[0]
    return out


def test_colocated_vllm_engine_sleeps_as_a_process_group_and_wakes_on_new_weights(
    tmp_path: Path, tokenizer: Path
) -> None:
    v0, v1 = write_versions(tmp_path, tie=True, tokenizer=tokenizer)
    inference = Inference.model_validate({"backend": "vllm", "servers": 1, "colocated": 0})
    template = engines(inference, v0, dict(os.environ))
    assert template["sleep"] == "signal"  # a CPU host
    env = {**os.environ, "TEMPLATE": json.dumps(template), "PROBE_PYTHON": sys.executable, "NEXT_WEIGHTS": str(v1)}
    node = shutil.which("node") or "node"
    with (tmp_path / "fleet-probe.log").open("w") as log:
        proc = subprocess.Popen(
            [node, "-e", PROBE], cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        started = probe_line(proc.stdout)
        pgid = started["pid"]
        assert len(group(pgid)) >= 2, "vLLM's API server and its engine core"
        assert probe_line(proc.stdout) == {"taken": 0}
        states = group(pgid)
        assert states and all(s == "T" for s in states.values()), states  # every process of the engine stopped

        proc.stdin.write("give\n")
        proc.stdin.flush()
        assert probe_line(proc.stdout) == {"serving": 1, "version": 1}
        assert all(s != "T" for s in group(pgid).values())
        body = {"model": "policy", "prompt": "hello", "max_tokens": 4, "temperature": 0}
        answer = http_json(started["url"].rstrip("/") + "/v1/completions", body, timeout=300)
        assert answer["choices"][0]["text"] is not None
        proc.stdin.write("close\n")
        proc.stdin.flush()
        assert probe_line(proc.stdout) == {"closed": True}
        assert proc.wait(60) == 0
        # nothing of the engine left running (a dead one may stay a zombie until whoever inherited it reaps it)
        assert all(s == "Z" for s in group(pgid).values()), group(pgid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log_text = (tmp_path / "fleet-probe.log").read_text()
    assert '"POST /pause?mode=keep HTTP/1.1" 200' in log_text
    assert '"POST /collective_rpc HTTP/1.1" 200' in log_text and '"POST /resume HTTP/1.1" 200' in log_text
