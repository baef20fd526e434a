"""The sandbox: what a run returns, and that hostile programs are stopped while the host stays untouched.

Every hostile case runs under both confinements: bwrap (what this machine uses) and the fallback (what a
machine without user namespaces would use), so the fallback is not an untested promise.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import pytest
from specs import rollout_stage, stage_configs

from trainflow_trainer.sandbox import Limits, Sandbox
from trainflow_trainer.sandbox import confinement as cf


def sandbox_processes() -> dict[int, int]:
    """Live processes per private sandbox uid on the host."""
    out: dict[int, int] = {}
    for pid in cf._pids():
        uid = cf._uid_of(pid)
        if uid is not None and cf.UID_RANGE[0] <= uid <= cf.UID_RANGE[1] and cf._state_of(pid) != "Z":
            out[uid] = out.get(uid, 0) + 1
    return out


class Runs:
    """Keeps the results of a test's runs, so the test can check that none of *its* runs left a process
    (other sandboxes may be running on the machine at the same time)."""

    def __init__(self, sb):
        self.sb, self.results = sb, []

    def __getattr__(self, name):
        return getattr(self.sb, name)

    def run_python(self, *a, **k):
        r = self.sb.run_python(*a, **k)
        self.results.append(r)
        return r

    def run(self, *a, **k):
        r = self.sb.run(*a, **k)
        self.results.append(r)
        return r


@pytest.fixture(scope="module", params=["bwrap", "fallback"])
def sandbox(request):
    return Sandbox(Limits(timeout_s=5, max_processes=16), confinement=request.param)


@pytest.fixture
def sb(sandbox):
    runs = Runs(sandbox)
    yield runs
    uids = {r.uid for r in runs.results}
    assert None not in uids, "the tests run as root: every run has a private uid"
    alive = {uid: n for uid, n in sandbox_processes().items() if uid in uids}
    assert not alive, f"sandboxed processes outlived their run: {alive}"


def test_bwrap_is_the_confinement_here():
    # install-sandbox.sh installs bubblewrap and the dev container allows user namespaces, so the default must
    # be bwrap. A machine that forbids user namespaces may opt into the fallback, knowingly, with
    # TRAINFLOW_SANDBOX_ALLOW_FALLBACK=1 (the fallback's own tests below run everywhere).
    sb = Sandbox()
    if os.environ.get("TRAINFLOW_SANDBOX_ALLOW_FALLBACK") == "1":
        assert sb.confinement in ("bwrap", "fallback")
    else:
        assert sb.confinement == "bwrap", f"{sb.why_not_bwrap} (run infra/dev/install-sandbox.sh)"
    assert os.geteuid() == 0, "these tests check per-run private uids, which need root (the dev container's user)"


def test_run_returns_output_exit_status_and_uses_a_private_folder(sb):
    r = sb.run_python(
        "import os, sys\nprint(open('data.txt').read().strip(), sys.stdin.read())\n"
        "print(len(os.listdir('.')), file=sys.stderr)\nopen('out.txt', 'w').write('x')\nsys.exit(3)",
        files={"data.txt": "hello"},
        stdin="from stdin",
    )
    assert r.stdout == "hello from stdin\n" and r.exit_code == 3 and not r.timed_out and not r.killed
    assert int(r.stderr) >= 2 and not r.ok and r.confinement == sb.confinement
    r2 = sb.run_python("import os; print(sorted(os.listdir('.')))")
    assert "out.txt" not in r2.stdout and "data.txt" not in r2.stdout  # every run starts in a fresh folder
    if sb.confinement == "bwrap":
        assert sb.run(["/bin/sh", "-c", "echo $PWD; id -u"]).stdout.split()[0] == "/sandbox"


def test_output_is_capped_and_a_crash_is_reported(sb):
    r = sb.run_python(
        "import sys\nfor _ in range(200000): sys.stdout.write('y' * 100)", limits=sb.limits.with_(output_bytes=1000)
    )
    assert len(r.stdout) == 1000 and r.stdout_truncated and r.exit_code == 0
    r = sb.run_python("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert r.killed and r.signal == 11 and not r.ok


def test_memory_is_limited(sb):
    r = sb.run_python("x = bytearray(3 * 2**30)\nprint('allocated')", limits=sb.limits.with_(memory_bytes=256 * 2**20))
    assert "MemoryError" in r.stderr and "allocated" not in r.stdout and not r.ok


def test_an_endless_loop_is_killed_at_the_timeout(sb):
    t0 = time.monotonic()
    r = sb.run_python("while True:\n    pass", limits=sb.limits.with_(timeout_s=1.5))
    assert r.timed_out and r.killed and r.exit_code is None and not r.ok
    assert 1.4 < r.duration_s < 5 and time.monotonic() - t0 < 8


def test_a_daemonised_child_does_not_survive_the_run(sb):
    # Double fork + setsid, then the parent exits 0 at once: the grandchild must still be killed.
    r = sb.run_python(
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        time.sleep(60)\n    os._exit(0)\nprint('parent done')"
    )
    assert r.exit_code == 0 and r.stdout == "parent done\n"


def test_a_fork_bomb_is_contained_by_the_process_limit(sb):
    peak: dict[int, int] = {}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            for uid, n in sandbox_processes().items():
                peak[uid] = max(peak.get(uid, 0), n)
            time.sleep(0.02)

    w = threading.Thread(target=watch)
    w.start()
    try:
        r = sb.run_python(
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
            limits=sb.limits.with_(timeout_s=2, max_processes=16),
        )
    finally:
        stop.set()
        w.join()
    assert r.timed_out and not r.ok
    # the limit (16) plus bwrap's own processes; never the thousands an unbounded bomb makes in 2 s
    assert 2 <= peak.get(r.uid, 0) <= 16 + 3, f"peak of {peak.get(r.uid)} processes in the sandbox"


def test_no_network(sb):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.1)
    port = server.getsockname()[1]
    code = (
        f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'hi')\n"
        "print('connected')"
    )
    try:
        r = sb.run_python(code)
        with pytest.raises(socket.timeout):
            server.accept()  # nothing ever reached the host's listener
    finally:
        server.close()
    assert not r.ok and "connected" not in r.stdout
    r = sb.run_python("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\nprint('connected')")
    assert not r.ok and "connected" not in r.stdout


def test_writes_outside_the_work_folder_never_reach_the_host(sb, tmp_path):
    target = tmp_path / "open-to-all"
    target.mkdir()
    os.chmod(tmp_path, 0o777)
    os.chmod(target, 0o777)  # permissions would allow it: only the confinement stops it
    name = f"trainflow-canary-{uuid.uuid4().hex}"
    code = (
        "import os\n"
        f"for d in [{str(target)!r}, '/tmp', '/var/tmp', '/dev/shm', os.path.expanduser('~')]:\n"
        "    try:\n"
        f"        open(os.path.join(d, {name!r}), 'w').write('pwned')\n"
        "    except OSError as e:\n"
        "        print('refused', d, type(e).__name__)\n"
    )
    r = sb.run_python(code)
    assert r.exit_code == 0
    for d in [target, "/tmp", "/var/tmp", "/dev/shm", os.path.expanduser("~")]:
        assert not os.path.exists(os.path.join(d, name)), f"the sandbox wrote into {d}"
    assert list(target.iterdir()) == []


def test_limits_from_the_config_block():
    """The resolved rollout.sandbox block (milliseconds: the schema parses the units) becomes Limits. Memory and
    process limits are the sandbox's own (the schema rejects them in a config until they reach the agent)."""
    default, custom = (
        st.rollout for st in stage_configs(rollout_stage(), rollout_stage(rollout={"sandbox": {"timeout": "2s"}}))
    )
    assert default is not None and custom is not None
    lim = Limits.from_config(default.sandbox)
    assert (lim.timeout_s, lim.memory_bytes, lim.max_processes) == (10.0, 512 * 2**20, 32)
    lim = Limits.from_config(custom.sandbox)
    assert (lim.timeout_s, lim.memory_bytes, lim.max_processes) == (2.0, 512 * 2**20, 32)


def test_a_workspace_persists_across_runs_and_parallel_runs_share_it(sb):
    from concurrent.futures import ThreadPoolExecutor

    with sb.workspace() as ws:
        ws.write({"seed.txt": "7"})
        r = sb.run_python("open('made.txt', 'w').write(str(int(open('seed.txt').read()) * 6))", workspace=ws)
        assert r.ok, r.stderr
        code = (
            "import time\nx = int(open('made.txt').read())\nopen('out-{i}.txt', 'w').write(str(x + {i}))\n"
            "open('seed.txt', 'a').write('')\ntime.sleep(0.3)\nprint(x + {i})"
        )
        with ThreadPoolExecutor(3) as pool:
            runs = list(pool.map(lambda i: sb.run_python(code.format(i=i), workspace=ws), range(3)))
        assert [r.stdout for r in runs] == ["42\n", "43\n", "44\n"], [r.stderr for r in runs]
        assert len({r.uid for r in runs}) == 3  # three private uids, one shared group
        r = sb.run_python("import os\nprint(sorted(f for f in os.listdir('.') if not f.startswith('.')))", workspace=ws)
        assert r.stdout.strip() == "['made.txt', 'out-0.txt', 'out-1.txt', 'out-2.txt', 'seed.txt']"
        host_dir = ws.host_dir
    assert not os.path.exists(host_dir)


def test_links_planted_in_a_workspace_never_lead_the_host_outside(sb, tmp_path):
    target = tmp_path / "host-file"
    target.write_text("original")
    os.chmod(tmp_path, 0o755)
    before = os.stat(target)
    with sb.workspace() as ws:
        if sb.confinement == "bwrap":  # a run plants the links (the fallback's audit hook would refuse it) ...
            r = sb.run_python(
                f"import os\nos.symlink({str(target)!r}, 'evil')\nos.symlink({str(tmp_path)!r}, 'sub')", workspace=ws
            )
            assert r.ok, r.stderr
        else:  # ... or, as if one had managed to, the test does
            os.symlink(target, os.path.join(ws.path, "evil"))
            os.symlink(tmp_path, os.path.join(ws.path, "sub"))
        for name in ("evil", "sub/evil"):
            with pytest.raises(ValueError, match="outside the work folder"):
                ws.write({name: "pwned"})
        assert sb.run_python("print('still usable')", workspace=ws).stdout == "still usable\n"
    after = os.stat(target)
    assert target.read_text() == "original" and (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert sorted(os.listdir(tmp_path)) == ["host-file"]
