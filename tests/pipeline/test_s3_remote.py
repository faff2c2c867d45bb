"""A DVC remote on S3, against a real S3-API server: moto's server (`moto_server`, pinned in
requirements-test.txt) started as its own process on 127.0.0.1 at a free port, as dvc-s3's own
tests do. Every repository points at it through `endpointurl` and dummy credentials in
`.dvc/config.local`, never in the committed `.dvc/config` (which names only `s3://bucket/path`).

What a team does with it: push, and pull into a fresh clone that then has nothing to run;
`dvc repro --pull`; the run-cache, which restores in one clone a training run computed in
another; faults
(wrong endpoint, missing bucket, bad credentials, the server gone in the middle of a push) that
reach the user as DVC's error, damage nothing and succeed once the fault is gone; and three
clones standing for three machines that share experiments through `dvc exp push` / `pull`,
driven by the same make targets the sweep workflow (.github/workflows/sweep.yml) runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.helpers.files import glob_digests
from tests.helpers.repo import BIN, PINNED, PipelineRepo

pytestmark = pytest.mark.slow

MOTO = BIN / "moto_server"
BUCKET = "cifar10-dvc"
CACHED = ("data/raw/*", "data/prepared/*", "models/*")
STAGES = ["fetch", "filter_normalize", "train", "evaluate"]
VENV = BIN.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """`moto_server` in its own process; IAM authentication on after the set-up calls, so that
    only the access key created here is accepted."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # the first 4 requests (bucket, user, its policy, its key) need no credentials; every later one does
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"}
        self.log = open(tmp / "moto.log", "w")  # noqa: SIM115 - open while the server runs; closed in stop()
        self.proc = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(self.port)], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and self.proc.poll() is None, (tmp / "moto.log").read_text()
                time.sleep(0.1)
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                          aws_access_key_id="setup", aws_secret_access_key="setup")
        s3.create_bucket(Bucket=BUCKET)
        iam = boto3.client("iam", endpoint_url=self.url, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="ci")
        iam.put_user_policy(UserName="ci", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="ci")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]

    def objects(self) -> list[str]:
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                          aws_access_key_id=self.key_id, aws_secret_access_key=self.secret)
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    if not MOTO.exists():
        pytest.fail(f"{MOTO} missing: `make test` installs moto[server] (requirements-test.txt)")
    server = S3Server(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


def s3_env(repo: PipelineRepo) -> dict[str, str]:
    """No real AWS settings reach DVC; one attempt per request, so faults show at once."""
    empty = repo.path.parent / "aws-config-empty"
    empty.touch()
    env = {k: v for k, v in repo.env.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=str(empty), AWS_SHARED_CREDENTIALS_FILE=str(empty), AWS_MAX_ATTEMPTS="1",
               AWS_EC2_METADATA_DISABLED="true")
    return env


def use_remote(repo: PipelineRepo, s3: S3Server, prefix: str, *, endpoint: str | None = None,
               key_id: str | None = None) -> None:
    """The remote's URL in .dvc/config (committed); where the server is and the keys in config.local."""
    repo.env = s3_env(repo)
    make(repo, "remote", f"REMOTE_URL=s3://{BUCKET}/{prefix}", f"ENDPOINT_URL={endpoint or s3.url}")
    repo.dvc("remote", "modify", "--local", "storage", "access_key_id", key_id or s3.key_id)
    repo.dvc("remote", "modify", "--local", "storage", "secret_access_key", s3.secret)


def make(repo: PipelineRepo, target: str, *variables: str, check: bool = True) -> subprocess.CompletedProcess:
    """A make target of the repository, run with this test run's venv (not one of its own)."""
    return repo.run("make", "-o", f"{VENV}/.s3-installed", target, f"VENV={VENV}", *variables, check=check)


def ran(stdout: str) -> list[str]:
    return re.findall(r"^Running stage '([^']+)'", stdout, re.M)


@pytest.fixture(scope="module")
def origin(synthetic_archive, tmp_path_factory, s3):
    """A repository whose pipeline ran once, its remote on the S3 server (pushed), and a bare git
    `origin` holding its history."""
    root = tmp_path_factory.mktemp("s3-origin")
    repo = PipelineRepo.create(root / "work", *synthetic_archive, **PINNED)
    use_remote(repo, s3, "shared")
    repo.dvc("repro")
    repo.git("add", "-A")
    repo.git("commit", "-qm", "results and the S3 remote")
    out = repo.dvc("push")
    assert re.search(r"^\d+ files? pushed$", out.stdout, re.M), out.stdout
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(root / "origin.git")], check=True)
    repo.git("remote", "add", "origin", str(root / "origin.git"))
    return repo, root / "origin.git"


def clone(origin_git: Path, dest: Path, like: PipelineRepo, s3: S3Server, prefix: str = "shared") -> PipelineRepo:
    repo = PipelineRepo(dest, dict(like.env))
    subprocess.run(["git", "clone", "-q", str(origin_git), str(dest)], check=True, env=like.env)
    use_remote(repo, s3, prefix)
    return repo


def test_the_committed_config_names_the_bucket_and_nothing_secret(origin, s3):
    repo, _ = origin
    committed = repo.git("show", "HEAD:.dvc/config").stdout
    assert f"url = s3://{BUCKET}/shared" in committed
    assert s3.secret not in committed and s3.key_id not in committed and "127.0.0.1" not in committed
    assert ".dvc/config.local" not in repo.git("ls-files").stdout


def test_push_then_a_fresh_clone_pulls_and_has_nothing_to_run(origin, s3, tmp_path):
    repo, origin_git = origin
    assert "Cache and remote 'storage' are in sync." in repo.dvc("status", "--cloud").stdout
    assert any(key.startswith("shared/files/md5/") for key in s3.objects())
    fresh = clone(origin_git, tmp_path / "fresh", repo, s3)
    assert glob_digests(fresh.path, *CACHED) == {}
    fresh.dvc("pull")
    assert glob_digests(fresh.path, *CACHED) == glob_digests(repo.path, *CACHED)
    out = fresh.dvc("repro")
    assert ran(out.stdout) == [] and "Data and pipelines are up to date." in out.stdout


def test_repro_pull_in_a_fresh_clone_fetches_and_runs_nothing(origin, s3, tmp_path):
    repo, origin_git = origin
    fresh = clone(origin_git, tmp_path / "fresh", repo, s3)
    out = fresh.dvc("repro", "--pull")
    assert ran(out.stdout) == [], out.stdout
    assert glob_digests(fresh.path, "models/*") == glob_digests(repo.path, "models/*")
    assert json.loads(fresh.dvc("status", "--json").stdout) == {}


def faulty_push(repo: PipelineRepo) -> subprocess.CompletedProcess:
    proc = repo.dvc("push", check=False, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc


@pytest.fixture
def local_work(origin, s3, tmp_path):
    """A clone with the pipeline's outputs, and a new model that is not on the remote yet."""
    repo, origin_git = origin
    work = clone(origin_git, tmp_path / "work", repo, s3, prefix="faults")
    work.dvc("pull", "-r", "storage", check=False)      # 'faults' is empty: nothing to pull
    work.dvc("repro")
    before = glob_digests(work.path, *CACHED, ".dvc/cache/files/md5/*/*")
    assert before
    return work, before


@pytest.mark.parametrize("fault, fragment", [
    ("wrong-endpoint", "Could not connect to the endpoint URL"),
    ("missing-bucket", "The specified bucket does not exist"),
    ("bad-credentials", "An error occurred (403)"),
])
def test_a_remote_fault_reaches_the_user_damages_nothing_and_then_push_works(local_work, s3, fault, fragment):
    work, before = local_work
    good = work.dvc("config", "--local", "--list").stdout
    if fault == "wrong-endpoint":
        work.dvc("remote", "modify", "--local", "storage", "endpointurl", f"http://127.0.0.1:{free_port()}")
    elif fault == "missing-bucket":
        work.dvc("remote", "modify", "storage", "url", "s3://no-such-bucket/faults")
    else:
        work.dvc("remote", "modify", "--local", "storage", "access_key_id", "AKIANOTAKEY000000000")
    proc = faulty_push(work)
    assert fragment in proc.stderr, proc.stderr
    assert glob_digests(work.path, *CACHED, ".dvc/cache/files/md5/*/*") == before
    # the fault gone, the same command succeeds
    work.git("checkout", "--", ".dvc/config")
    (work.path / ".dvc/config.local").write_text("")
    for line in good.splitlines():
        key, _, value = line.partition("=")
        work.dvc("config", "--local", key, value)
    assert re.search(r"^\d+ files? pushed$|^Everything is up to date\.$", work.dvc("push").stdout, re.M)
    assert "Cache and remote 'storage' are in sync." in work.dvc("status", "--cloud").stdout


class DyingProxy:
    """A TCP proxy in front of the server that serves `allowed` connections, then refuses any
    more: the server going away in the middle of a push. `heal()` makes it forward again."""

    def __init__(self, target_port: int, allowed: int) -> None:
        self.target, self.allowed, self.served = target_port, allowed, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def heal(self) -> None:
        self.allowed = 10 ** 9

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.served += 1
            if self.served > self.allowed:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def test_the_server_gone_in_the_middle_of_a_push(local_work, s3, tmp_path):
    work, before = local_work
    proxy = DyingProxy(s3.port, allowed=3)
    work.dvc("remote", "modify", "--local", "storage", "endpointurl", proxy.url)
    work.dvc("remote", "modify", "--local", "storage", "jobs", "1")
    proc = faulty_push(work)
    assert proxy.served > 3, "the push never got past the first requests"
    # Which of botocore's two reports of a vanished endpoint DVC shows depends on whether the
    # client was reading (EOF: "Connection was closed ...") or still writing (a reset: "Could
    # not connect ...") when the proxy hung up; both must name the proxy, not some other fault.
    gone = ("Connection was closed before we received a valid response from endpoint URL",
            "Could not connect to the endpoint URL")
    assert any(f'{message}: "{proxy.url}/' in proc.stderr for message in gone), proc.stderr
    assert glob_digests(work.path, *CACHED, ".dvc/cache/files/md5/*/*") == before
    proxy.heal()
    work.dvc("push")
    assert "Cache and remote 'storage' are in sync." in work.dvc("status", "--cloud").stdout


def test_experiments_run_on_two_machines_are_gathered_on_a_third(origin, s3, tmp_path):
    """The sweep workflow's route: each machine `make exp-run` (exp run --pull, exp push origin),
    the last `make exp-gather` (exp pull origin, exp show); then apply the best and pull its model."""
    repo, origin_git = origin
    machines = {name: clone(origin_git, tmp_path / name, repo, s3) for name in ("a", "b", "c")}
    runs = {"a": ("lr-0.05", "-S train.learning_rate=0.05"), "b": ("lr-0.002", "-S train.learning_rate=0.002")}
    for name, (exp, overrides) in runs.items():
        out = make(machines[name], "exp-run", f"EXP={exp}", f"SET={overrides}")
        assert "Running stage 'train'" in out.stdout and "Running stage 'fetch'" not in out.stdout, out.stdout

    c = machines["c"]
    summary = tmp_path / "summary.md"
    c.env["GITHUB_STEP_SUMMARY"] = str(summary)
    make(c, "exp-gather", "EXPS=lr-0.05 lr-0.002")
    shown = json.loads(c.dvc("exp", "show", "--json").stdout)
    exps = {e["name"]: e for rev in shown for e in (rev.get("experiments") or []) for e in [e["revs"][0]]
            if e.get("name")}
    assert set(exps) >= {"lr-0.05", "lr-0.002"}, shown
    accuracy = {}
    for name, exp in exps.items():
        data = exp["data"]
        assert data["params"]["params.yaml"]["data"]["train"]["learning_rate"] == float(name[3:])
        accuracy[name] = data["metrics"]["metrics/metrics.json"]["data"]["test"]["accuracy"]
    assert "lr-0.05" in summary.read_text() and "lr-0.002" in summary.read_text()

    best = max(accuracy, key=accuracy.get)
    c.dvc("exp", "apply", best)
    c.dvc("pull")
    assert c.params()["train"]["learning_rate"] == float(best[3:])
    out = c.dvc("repro")
    assert ran(out.stdout) == [] and "Data and pipelines are up to date." in out.stdout
    metrics = json.loads((c.path / "metrics/metrics.json").read_text())
    assert metrics["test"]["accuracy"] == accuracy[best]


def set_params(repo: PipelineRepo, **train) -> None:
    params = repo.params()
    params["train"].update(train)
    repo.write_params(params)


@pytest.mark.parametrize("route", ["repro --pull", "exp run --pull"])
def test_run_cache_restores_a_training_run_computed_in_another_clone(origin, s3, tmp_path, route):
    """Clone a trains with params nobody committed and pushes its run-cache; clone b, with the
    same params, gets that training from the remote instead of computing it (DVC: "Stage 'train'
    is cached - skipping run"). `train` has only cached outputs for this (stages/_history.py).
    `--pull` is the way: `dvc pull --run-cache` fetches the run records, not their outputs."""
    repo, origin_git = origin
    rate = {"repro --pull": 0.03, "exp run --pull": 0.04}[route]
    a = clone(origin_git, tmp_path / "a", repo, s3)
    a.dvc("pull")
    set_params(a, learning_rate=rate)
    out = a.dvc("repro")
    assert ran(out.stdout) == ["train", "evaluate"], out.stdout
    a.dvc("push", "--run-cache")

    b = clone(origin_git, tmp_path / "b", repo, s3)
    if route == "repro --pull":
        set_params(b, learning_rate=rate)
        out = b.dvc("repro", "--pull")
    else:
        out = b.dvc("exp", "run", "--pull", "-S", f"train.learning_rate={rate}")
    assert "Stage 'train' is cached - skipping run, checking out outputs" in out.stdout, out.stdout
    assert ran(out.stdout) == ["evaluate"], out.stdout
    results = ("models/*", "metrics/*", "plots/*")
    assert glob_digests(b.path, *results) == glob_digests(a.path, *results)
