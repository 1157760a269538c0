#!/usr/bin/env python3
"""The cluster recipes in pipelines/cluster and Datasette, run for real (scripts/test.sh runs this after swift test).

  python3 Tests/Cluster/cluster_tests.py --reelql .build/debug/reelql [slurm] [kubernetes]

slurm       A real single-node Slurm (Debian's slurm-wlm and munge, installed if missing) on
            localhost, with a throwaway config, munge key and state in a temporary directory:
            pipelines/cluster/slurm-array.sh runs a spec over fixture videos in 3 shards with the
            given reelql binary; the merged database must equal a single-machine run of the same
            spec. Then one array task is killed mid-run (scancel --signal=KILL) and requeued: it
            must resume from its database (the clips it finished are not redone) and the merge must
            again equal the single run. Every daemon and job it starts, it stops.
datasette   Datasette (pinned in scripts/requirements-checks.txt, with datasette-render-images) on a
            database of the demo pipeline: its search box on results uses the FTS index, and the
            thumbnails table shows its pictures.
kubernetes  pipelines/cluster/k8s-indexed-job.yaml against the Kubernetes API schema (strict,
            offline: kubernetes-validate ships the schemas; pinned in scripts/requirements-checks.txt),
            and its shard arithmetic: pod JOB_COMPLETION_INDEX i (0-based) runs --shard i+1/N
            (1-based) into its own database, N = completions, and the merge reads every shard.

Python's standard library only (the schema validator lives in its own virtualenv). A test whose
prerequisites cannot be had here (not root and Slurm missing; no package index) is skipped with
the reason printed. The last line is "cluster: N passed, N failed, N skipped".
"""
import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLURM_SCRIPT = os.path.join(ROOT, "pipelines/cluster/slurm-array.sh")
K8S_MANIFEST = os.path.join(ROOT, "pipelines/cluster/k8s-indexed-job.yaml")
SHARDS = 3


class Skip(Exception):
    pass


def log(msg):
    print(f"cluster: {msg}", flush=True)


def run(cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def wait_until(what, predicate, timeout, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# MARK: - Databases

def readonly(path):
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def rows(path):
    """What a database says about the footage: videos with their status, clips, results' texts."""
    with readonly(path) as db:
        r = [f"video|{p}|{s}|{e or ''}" for p, s, e in db.execute("SELECT path, status, error_kind FROM videos")]
        r += [f"clip|{p}|{i}|{a:.6f}|{b:.6f}|{n}" for p, i, a, b, n in db.execute(
            "SELECT v.path, c.clip_index, c.start_seconds, c.end_seconds, c.frames FROM clips c JOIN videos v ON v.id = c.video_id")]
        r += [f"result|{p}|{i}|{k}|{q}|{t}" for p, i, k, q, t in db.execute(
            "SELECT v.path, r.clip_index, r.kind, r.prompt, r.text FROM results r JOIN videos v ON v.id = r.video_id")]
    return sorted(r)


def committed_clips(path):
    """Clips committed by a run still writing the database (0 until it is in WAL mode)."""
    if not os.path.exists(path + "-wal"):
        return 0
    try:
        with readonly(path) as db:
            return db.execute("SELECT count(*) FROM clips").fetchone()[0]
    except sqlite3.Error:
        return 0


def expect_same(merged, single, what):
    a, b = rows(merged), rows(single)
    missing, extra = sorted(set(b) - set(a)), sorted(set(a) - set(b))
    assert not missing and not extra and len(a) == len(b), (
        f"{what}: merged database differs from the single run: {len(missing)} rows missing "
        f"(e.g. {missing[:3]}), {len(extra)} extra (e.g. {extra[:3]}), {len(a)} vs {len(b)} rows")
    assert sum(1 for x in a if x.startswith("clip|")) > 0, f"{what}: no clips at all"


# MARK: - Slurm

class Slurm:
    """munged, slurmctld and slurmd for one node on localhost, everything under one temporary dir."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        self.env = dict(os.environ, SLURM_CONF=os.path.join(tmp, "slurm.conf"))

    def start(self):
        t = self.tmp
        munge = os.path.join(t, "munge")
        os.makedirs(munge, mode=0o700)
        os.chmod(munge, 0o711)  # the socket's directory must be searchable by clients
        for d in ("state", "spool"):
            os.makedirs(os.path.join(t, d))
        self.socket = os.path.join(munge, "munge.socket")
        run(["mungekey", "--create", f"--keyfile={munge}/munge.key"])
        self.procs.append(subprocess.Popen(
            ["munged", "--foreground", "--force", f"--key-file={munge}/munge.key", f"--socket={self.socket}",
             f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until("munged's socket", lambda: os.path.exists(self.socket), 20)
        host = socket.gethostname().split(".")[0]
        conf = f"""
ClusterName=reelqltest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.socket}
CredType=cred/munge
StateSaveLocation={t}/state
SlurmdSpoolDir={t}/spool
SlurmctldPidFile={t}/slurmctld.pid
SlurmdPidFile={t}/slurmd.pid
SlurmctldLogFile={t}/slurmctld.log
SlurmdLogFile={t}/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
JobRequeue=1
MinJobAge=3600
NodeName=reelqlnode NodeAddr=127.0.0.1 CPUs=2 RealMemory=16000 State=UNKNOWN
PartitionName=reelql Nodes=reelqlnode Default=YES MaxTime=INFINITE State=UP
"""
        with open(self.env["SLURM_CONF"], "w") as f:
            f.write(conf)
        self.procs.append(subprocess.Popen(["slurmctld", "-D", "-c", "-i"], env=self.env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.procs.append(subprocess.Popen(["slurmd", "-D", "-N", "reelqlnode"], env=self.env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until("the node to be idle", lambda: "idle" in self.cmd(["sinfo", "-h", "-o", "%T"], check=False).stdout, 60, 0.5)

    def cmd(self, args, check=True, env=None, **kw):
        return run(args, check=check, env=dict(self.env, **(env or {})), **kw)

    def tasks(self, job):
        """{array task id (or job id for a plain job): state} from the controller."""
        r = self.cmd(["scontrol", "-o", "show", "job", str(job)], check=False)
        states = {}
        for line in r.stdout.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            states[fields.get("ArrayTaskId", fields.get("JobId"))] = fields.get("JobState")
        return states

    def stop(self):
        for args in (["scancel", "--full", "--signal=KILL", "--user=root"], ["scancel", "--user=root"]):
            self.cmd(args, check=False)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        # Job processes the daemons may have left (a batch step whose slurmstepd was stopped).
        run(["pkill", "-KILL", "-f", os.path.join(self.tmp, "")], check=False)

    def log_tail(self):
        """The daemons' logs, the jobs' output and reelql's logs, for a failure report."""
        out = []
        names = ["slurmctld.log", "slurmd.log"]
        for d in sorted(os.listdir(self.tmp)):
            if d.startswith("results-"):
                names += [os.path.join(d, f) for f in sorted(os.listdir(os.path.join(self.tmp, d))) if f.endswith((".log", ".out"))]
        for name in names:
            try:
                with open(os.path.join(self.tmp, name)) as f:
                    out.append(f"--- {name}\n" + "".join(f.readlines()[-15:]))
            except OSError:
                pass
        return "\n".join(out)


def ensure_slurm():
    tools = ["slurmctld", "slurmd", "sbatch", "munged", "mungekey"]
    if all(shutil.which(t) for t in tools):
        return
    if os.geteuid() != 0:
        raise Skip("slurm-wlm and munge are not installed, and installing them needs root")
    log("installing slurm-wlm and munge")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "slurm-wlm", "munge"],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "slurm-wlm", "munge"],
                           capture_output=True, text=True, env=env)
    if r.returncode != 0 or not all(shutil.which(t) for t in tools):
        raise Skip(f"slurm-wlm and munge could not be installed: {r.stderr.strip()[-300:]}")


def test_slurm(reelql):
    ensure_slurm()
    if os.geteuid() != 0:
        raise Skip("a throwaway Slurm needs root (SlurmdUser=root)")
    tmp = tempfile.mkdtemp(prefix="reelql-slurm-")
    slurm = Slurm(tmp)
    try:
        _slurm_runs(slurm, reelql, tmp)
    except Exception:
        print(slurm.log_tail(), file=sys.stderr)
        raise
    finally:
        slurm.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _slurm_runs(slurm, reelql, tmp):
    # The footage: every fixture video (good and broken) and the demo clips, described by the demo
    # model in 1-second clips; 3 shards of 1–6 s of model time each.
    videos = os.path.join(tmp, "videos")
    shutil.copytree(os.path.join(ROOT, "fixtures/videos"), os.path.join(videos, "fixtures"))
    shutil.copytree(os.path.join(ROOT, "fixtures/demo"), os.path.join(videos, "demo"))
    spec = os.path.join(tmp, "spec.yaml")
    with open(spec, "w") as f:
        f.write(f"""inputs: {{paths: [{videos}], recursive: true}}
sampling: {{fps: 2}}
clips: {{seconds: 1.0, min_remainder: 0.25}}
model: {os.path.join(ROOT, "models/demo")}
prompts: {{description: Describe this video., questions: [How many shapes are there?, Does any shape appear later?], summary: ""}}
generation: {{max_new_tokens: 64}}
""")
    single = os.path.join(tmp, "single.sqlite")
    r = run([reelql, "run", spec, "--db", single, "--quiet"], check=False)
    assert r.returncode in (0, 3), f"single-machine run exited {r.returncode}: {r.stderr}"
    slurm.start()
    log("slurm: single-node cluster up")

    def submit(results):
        os.makedirs(results)
        env = dict(REELQL_BIN=reelql, REELQL_SHARDS=str(SHARDS), REELQL_SPEC=spec, REELQL_RESULTS=results)
        r = slurm.cmd(["bash", SLURM_SCRIPT], cwd=results, env=env)
        array, merge = r.stdout.split()
        return array, merge

    def wait_done(job, what, timeout=240):
        done = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")
        states = wait_until(what, lambda: (lambda s: s if s and all(v in done for v in s.values()) else None)(slurm.tasks(job)), timeout, 0.5)
        assert all(v == "COMPLETED" for v in states.values()), f"{what}: {states}"

    # 1. Three shards and the dependent merge equal one machine's run.
    results = os.path.join(tmp, "results-1")
    array, merge = submit(results)
    wait_done(array, "the array")
    wait_done(merge, "the merge job")
    merged = os.path.join(results, "nightly.sqlite")
    expect_same(merged, single, "3 shards")
    shard_clips = {}
    for k in range(1, SHARDS + 1):
        with readonly(os.path.join(results, f"shard-{k}.sqlite")) as db:
            shard_clips[k] = db.execute("SELECT count(*) FROM clips").fetchone()[0]
            assert db.execute("SELECT shard FROM runs").fetchall() == [(f"{k}/{SHARDS}",)]
    assert sum(shard_clips.values()) == sum(1 for x in rows(single) if x.startswith("clip|"))
    log(f"slurm: 3 shards ({shard_clips} clips) merged equal the single run")

    # 2. Kill the largest shard's task mid-run, requeue it: it resumes from its database.
    results = os.path.join(tmp, "results-2")
    array, merge = submit(results)
    slurm.cmd(["scontrol", "hold", merge])  # the merge waits for the requeued task, not its first death
    k = max(shard_clips, key=shard_clips.get)
    task, db = f"{array}_{k}", os.path.join(results, f"shard-{k}.sqlite")
    target = max(1, shard_clips[k] // 4)
    wait_until(f"shard {k} to commit {target} clips", lambda: committed_clips(db) >= target, 240, 0.05)
    # Slurm turns a KILL for a step into SIGTERM, then SIGKILL after KillWait: reelql stops after the
    # clip in flight (a hard kill -9 mid-clip is RunCLITests.killNineThenRerunEqualsUninterrupted).
    slurm.cmd(["scancel", "--signal=KILL", task])
    wait_until(f"task {task} to end", lambda: slurm.tasks(task).get(str(k)) not in (None, "RUNNING", "PENDING", "COMPLETING"), 60)
    state = slurm.tasks(task).get(str(k))
    with readonly(db) as conn:
        done_before = conn.execute("SELECT count(*) FROM clips").fetchone()[0]
    assert state != "COMPLETED" and 0 < done_before < shard_clips[k], (
        f"the kill did not land mid-run: task {task} {state} with {done_before} of {shard_clips[k]} clips")
    log(f"slurm: task {task} killed ({state}) after {done_before} of {shard_clips[k]} clips")
    slurm.cmd(["scontrol", "requeue", task])
    # Not Slurm's long requeue delay, but not the same second either: slurmd refuses a launch whose
    # credential is not newer (in whole seconds) than the kill's revocation of the job's credential
    # ("Killing non-startable batch job: Job credential revoked", seen when the requeued task started
    # 0.09 s after the kill).
    slurm.cmd(["scontrol", "update", f"JobId={task}", "StartTime=now+2"], check=False)

    # The controller may still show the killed run's end (CANCELLED, or FAILED once its exit
    # status 130 is in) for a moment after the requeue: wait for the requeue itself (its restart
    # count), or wait_done would take that old state for the new run's.
    def requeued():
        r = slurm.cmd(["scontrol", "-o", "show", "job", task], check=False)
        fields = dict(f.split("=", 1) for f in r.stdout.split() if "=" in f)
        if int(fields.get("Restarts", "0") or 0) < 1:
            return False
        if fields.get("JobState") not in ("CANCELLED", "FAILED"):
            return True
        # An end state after the requeue is the new run's only once that run has begun (its row).
        try:
            with readonly(db) as conn:
                return conn.execute("SELECT count(*) FROM runs").fetchone()[0] >= 2
        except sqlite3.Error:
            return False
    wait_until(f"task {task} to be requeued", requeued, 60, 0.1)
    wait_done(array, "the array after the requeue")
    slurm.cmd(["scontrol", "release", merge])
    wait_done(merge, "the merge job after the requeue")
    with readonly(db) as conn:
        runs = [r[0] for r in conn.execute("SELECT id FROM runs ORDER BY id")]
        by_run = dict(conn.execute("SELECT run_id, count(*) FROM clips GROUP BY run_id").fetchall())
    assert len(runs) == 2, f"shard {k}: expected the killed run and its resumption, found runs {runs}"
    kept, redone = by_run.get(runs[0], 0), by_run.get(runs[1], 0)
    assert kept == done_before and redone == shard_clips[k] - done_before, (
        f"shard {k}: the requeued task did not resume from its database: {kept} clips kept from the killed "
        f"run and {redone} done by the requeued one; {done_before} of {shard_clips[k]} were done before the kill")
    expect_same(os.path.join(results, "nightly.sqlite"), single, "after kill and requeue")
    log(f"slurm: the requeued task kept {kept} clips and did the other {redone}; merge equal again")


# MARK: - Kubernetes

def checks_python():
    """The virtualenv with kubernetes-validate (and PyYAML), created once outside the repository."""
    venv = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "reelql-checks")
    py = os.path.join(venv, "bin", "python")
    req = os.path.join(ROOT, "scripts/requirements-checks.txt")
    stamp = os.path.join(venv, ".requirements")
    with open(req) as f:
        wanted = f.read()
    if not (os.path.exists(py) and os.path.exists(stamp) and open(stamp).read() == wanted):
        if subprocess.run([sys.executable, "-m", "venv", venv], capture_output=True).returncode != 0:
            raise Skip("python3 -m venv is not available (Debian: python3-venv)")
        r = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", req],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise Skip(f"kubernetes-validate could not be installed: {r.stderr.strip()[-300:]}")
        with open(stamp, "w") as f:
            f.write(wanted)
    return py


def test_kubernetes(reelql):
    py = checks_python()
    validator = os.path.join(os.path.dirname(py), "kubernetes-validate")
    r = run([validator, "--strict", K8S_MANIFEST], check=False)
    assert r.returncode == 0, f"k8s-indexed-job.yaml does not validate:\n{r.stdout}{r.stderr}"
    # The validator must be able to fail: a misspelt field is rejected.
    with tempfile.TemporaryDirectory() as tmp:
        bad = os.path.join(tmp, "bad.yaml")
        with open(K8S_MANIFEST) as f, open(bad, "w") as g:
            g.write(f.read().replace("completionMode:", "completionMod:", 1))
        assert run([validator, "--strict", bad], check=False).returncode != 0, "the validator accepted a misspelt field"
        docs = json.loads(run([py, "-c", "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
                               K8S_MANIFEST]).stdout)
        jobs = {d["metadata"]["name"]: d for d in docs if d and d.get("kind") == "Job"}
        shards, merge = jobs["reelql-shards"], jobs["reelql-merge"]
        n = shards["spec"]["completions"]
        assert shards["spec"]["completionMode"] == "Indexed" and n >= 1
        container = shards["spec"]["template"]["spec"]["containers"][0]
        # Run the pod's command with a stand-in reelql that records its arguments, for every index.
        fake = os.path.join(tmp, "bin")
        os.makedirs(fake)
        with open(os.path.join(fake, "reelql"), "w") as f:
            f.write(f'#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n')
        os.chmod(os.path.join(fake, "reelql"), 0o755)
        dbs = []
        for index in range(n):
            env = dict(os.environ, JOB_COMPLETION_INDEX=str(index), PATH=fake + ":" + os.environ["PATH"])
            args = json.loads(run(container["command"] + container["args"], env=env).stdout)
            assert args[0] == "run", args
            shard = args[args.index("--shard") + 1]
            assert shard == f"{index + 1}/{n}", f"JOB_COMPLETION_INDEX {index} ran --shard {shard}, expected {index + 1}/{n}"
            dbs.append(args[args.index("--db") + 1])
        assert len(set(dbs)) == n, f"pods share databases: {dbs}"
        # The real reelql takes the first and last pod's shard (over an empty directory) and refuses
        # the index past the last, which no pod gets.
        empty = os.path.join(tmp, "empty")
        os.makedirs(empty)
        for shard in (f"1/{n}", f"{n}/{n}"):
            r = run([reelql, "run", empty, "--shard", shard, "--db", os.path.join(tmp, "probe.sqlite"), "--quiet"], check=False)
            assert r.returncode == 0, f"reelql run --shard {shard} exited {r.returncode}: {r.stderr}"
        r = run([reelql, "run", empty, "--shard", f"{n + 1}/{n}", "--db", os.path.join(tmp, "probe.sqlite")], check=False)
        assert r.returncode != 0 and "--shard" in r.stderr, f"reelql accepted --shard {n + 1}/{n}: {r.returncode} {r.stderr}"
        # The merge job reads every shard's database.
        merge_cmd = merge["spec"]["template"]["spec"]["containers"][0]["command"]
        results = os.path.join(tmp, "results")
        os.makedirs(results)
        for d in dbs:
            open(os.path.join(results, os.path.basename(d)), "w").close()
        script = merge_cmd[-1].replace("/results/", results + "/")
        args = json.loads(run(["sh", "-c", script], env=dict(os.environ, PATH=fake + ":" + os.environ["PATH"])).stdout)
        assert args[0] == "merge" and sorted(os.path.basename(a) for a in args[2:]) == sorted(os.path.basename(d) for d in dbs), args
    # The merge waits with kubectl: its service account must be allowed to read Jobs.
    merge_pod = merge["spec"]["template"]["spec"]
    if any(c["command"][0] == "kubectl" for c in merge_pod.get("initContainers", [])):
        account = merge_pod.get("serviceAccountName")
        roles = {d["metadata"]["name"]: d for d in docs if d and d.get("kind") == "Role"}
        bound = [roles.get(b["roleRef"]["name"]) for b in docs if b and b.get("kind") == "RoleBinding"
                 and any(s.get("kind") == "ServiceAccount" and s.get("name") == account for s in b.get("subjects", []))]
        allowed = {(g, res, v) for role in bound if role for rule in role["rules"]
                   for g in rule["apiGroups"] for res in rule["resources"] for v in rule["verbs"]}
        assert account and {("batch", "jobs", "get"), ("batch", "jobs", "watch")} <= allowed, (
            f"the merge Job runs kubectl wait as service account {account!r}, which may not get and watch Jobs")
    log(f"kubernetes: manifest valid (strict, API 1.37); indices 0…{n - 1} run shards 1…{n} of {n}; merge reads all {n}")


def test_datasette(reelql):
    """`datasette DB` as a user runs it on a database reelql wrote: its search box on `results`
    uses results_fts, and with datasette-render-images the thumbnails show as pictures."""
    import urllib.parse
    import urllib.request
    py = checks_python()
    datasette = os.path.join(os.path.dirname(py), "datasette")
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "demo.sqlite")
        r = run([reelql, "run", os.path.join(ROOT, "pipelines/demo.yaml"), "--db", db, "--quiet"], check=False)
        assert r.returncode == 0, f"demo run exited {r.returncode}: {r.stderr}"
        with readonly(db) as conn:
            total = conn.execute("SELECT count(*) FROM results").fetchone()[0]
            expected = conn.execute("SELECT count(*) FROM results_fts WHERE results_fts MATCH 'circle'").fetchone()[0]
            thumbs = conn.execute("SELECT count(*) FROM thumbnails").fetchone()[0]
        assert 0 < expected < total and thumbs > 0, (expected, total, thumbs)
        port = free_port()
        server = subprocess.Popen([datasette, db, "-h", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}/demo"
            def get(path):
                with urllib.request.urlopen(base + path, timeout=10) as f:
                    return f.read().decode()
            def up():
                try:
                    return get(".json")
                except OSError:
                    return None
            wait_until("datasette to answer", up, 30, 0.3)
            found = json.loads(get("/results.json?" + urllib.parse.urlencode({"_search": "circle", "_shape": "array", "_size": "max"})))
            assert len(found) == expected, f"Datasette's search on results gave {len(found)} rows, FTS5 {expected} (of {total})"
            page = get("/thumbnails?_size=max")
            shown = page.count('src="data:image/jpeg;base64,')
            assert shown == thumbs, f"Datasette showed {shown} of {thumbs} thumbnails as images"
        finally:
            server.terminate()
            server.wait(10)
    log(f"datasette: search on results finds {expected} of {total} rows (as FTS5); {thumbs} thumbnails shown as images")


TESTS = {"datasette": test_datasette, "kubernetes": test_kubernetes, "slurm": test_slurm}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reelql", required=True, help="the reelql binary to test")
    ap.add_argument("tests", nargs="*", help=f"which tests: {', '.join(sorted(TESTS))} (default: all)")
    a = ap.parse_args()
    for name in a.tests:
        if name not in TESTS:
            ap.error(f"no test '{name}': choose from {', '.join(sorted(TESTS))}")
    reelql = os.path.abspath(a.reelql)
    passed = failed = skipped = 0
    for name in a.tests or sorted(TESTS):
        start = time.monotonic()
        try:
            TESTS[name](reelql)
            passed += 1
            log(f"✔ {name} passed ({time.monotonic() - start:.0f} s)")
        except Skip as e:
            skipped += 1
            log(f"- {name} skipped: {e}")
        except Exception as e:
            failed += 1
            traceback.print_exc()
            log(f"✘ {name} failed ({time.monotonic() - start:.0f} s): {e}")
    print(f"cluster: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
