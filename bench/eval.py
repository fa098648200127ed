#!/usr/bin/env python3
"""Evaluation at nixpkgs scale, against one `nix-instantiate` of the same expression.

The workload (issue 22): a flat attribute set of N jobs, each a derivation
whose build script embeds a small fold over a 200-element list, with
`meta.description` beside it, and a `salt` string input so that every run
makes new derivations. For each worker count it times Orthrus from the
jobset being created to the evaluation recorded with its N builds, and
`nix-instantiate` of the same expression with a fresh salt, in the same run.

    bench/eval.py [--jobs 20000] [--workers 1,2] [--rounds 3] [--binary target/release/orthrus] [--postgres URL]

Each worker count is measured over `--rounds` rounds, Orthrus and
nix-instantiate taking turns (in the order A B, B A, A B, ...: a file system
that speeds up or slows down over the run favours neither), and the medians
are compared: on this VM the same nix-instantiate took 6 s in one minute
and 20 s in another (ext4's inode allocator skips inodes freed in the last
minutes, so a run just after a deletion is slow), more than the gap being
measured.

Also printed: the server's resident memory before and at its peak during
the evaluation, and how long recording took (from the server's log line
`evaluation recorded`). The derivations written are deleted afterwards
(`nix-store --delete`), so the store does not grow run after run.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from orthrus_bench import BINARY, Server, delete_paths, nix_env, rss_mib

EXPRESSION = """{ salt, lo ? 0, hi ? N }:
let
  mk = i: (derivation {
    name = "job-${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo ${salt} ${toString (builtins.foldl' (acc: x: acc + x) 0 (builtins.genList (x: x * i) 200))} > $out" ];
  }) // { meta.description = "job number ${toString i}"; };
in builtins.listToAttrs (builtins.genList (k: { name = "job${toString (lo + k)}"; value = mk (lo + k); }) (hi - lo))
"""


def write_expression(directory, n):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "release.nix"), "w") as f:
        f.write(EXPRESSION.replace("hi ? N", f"hi ? {n}"))


def bench_nix(n, env, processes=1):
    """`nix-instantiate` of the N jobs with a fresh salt, in one process or
    split in contiguous parts over several at once (the floor for as many
    workers on this store)."""
    work = tempfile.mkdtemp(prefix="orthrus-bench-eval-nix-")
    try:
        write_expression(work, n)
        salt = f"nix-{time.time_ns()}"
        bounds = [(n * p // processes, n * (p + 1) // processes) for p in range(processes)]
        start = time.monotonic()
        running = [subprocess.Popen(["nix-instantiate", os.path.join(work, "release.nix"), "--argstr", "salt", salt,
                                     "--arg", "lo", str(lo), "--arg", "hi", str(hi)],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                   for lo, hi in bounds]
        drvs = [path for process in running for path in process.communicate()[0].split()]
        elapsed = time.monotonic() - start
        if len(drvs) != n:
            sys.exit(f"nix-instantiate made {len(drvs)} derivations, not {n}")
        return elapsed, drvs
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fresh_database(url):
    """An empty database beside the one `url` names (which the runs' user
    may create databases from), so that no run finds another's builds
    still queued (a server loads its queue as it starts)."""
    base, _, _ = url.rpartition("/")
    name = f"orthrus_bench_{time.time_ns()}"
    subprocess.run(["psql", url, "-qc", f"CREATE DATABASE {name}"], check=True)
    return f"{base}/{name}"


def bench_orthrus(binary, n, workers, env, postgres=""):
    """Returns the figures, the derivations written and the work directory
    (with the server's GC roots), both to delete at the end."""
    work = tempfile.mkdtemp(prefix="orthrus-bench-eval-")
    src = os.path.join(work, "src")
    write_expression(src, n)
    env = dict(env, RUST_LOG="warn,orthrus::eval=info", NO_COLOR="1")
    # Nothing is built: only the evaluation is measured.
    server = Server(binary, work, env, '[machines]\nlocal = false\n',
                    workers=workers)
    if postgres:
        with open(server.config) as f:
            config = f.read()
        with open(server.config, "w") as f:
            f.write(f'database_url = "{fresh_database(postgres)}"\n' + config)
    server.start()
    try:
        time.sleep(1)
        before = rss_mib(server.process.pid)
        peak = [before]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_mib(server.process.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        start = time.monotonic()
        # A project of its own: a PostgreSQL database is shared by the runs.
        project = f"bench-{time.time_ns()}"
        server.request("PUT", f"/project/{project}", {"displayname": "bench"})
        server.request("PUT", f"/jobset/{project}/main", {
            "nixexprinput": "src", "nixexprpath": "release.nix", "checkinterval": 0,
            "inputs": {"src": {"type": "path", "value": src},
                       "salt": {"type": "string", "value": f"orthrus-{time.time_ns()}"}},
        })
        progress_seen = False
        while True:
            jobset = server.request("GET", f"/jobset/{project}/main")
            progress = jobset.get("evaluation")
            if progress and progress.get("evaluated", 0) > 0:
                progress_seen = True
            if jobset.get("lastcheckedtime") and not jobset.get("starttime"):
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - start
        done.set()
        sampler.join()
        evals = server.request("GET", f"/jobset/{project}/main/evals")["evals"]
        if not evals or len(evals[0]["builds"]) != n:
            sys.exit(f"expected one evaluation of {n} builds: {jobset.get('errormsg') or 'see ' + work}")
        builds = server.request("GET", f"/eval/{evals[0]['id']}/builds")
        drvs = [b["drvpath"] for b in builds]
        with open(os.path.join(work, "server.log")) as f:
            log = f.read()
        recorded = re.findall(r"record_ms=(\d+)", log)
        record_s = int(recorded[-1]) / 1000 if recorded else None
        # The parts of recording (and the rooting of outputs before it).
        line = [l for l in log.splitlines() if "evaluation recorded" in l]
        phases = " ".join(f"{k[:-3]} {int(v) / 1000:.2f}" for k, v in re.findall(r"(\w+_ms)=(\d+)", line[-1])
                          if k != "record_ms") if line else ""
        print(f"  recording's parts (s): {phases}")
        checked = re.findall(r"check_ms=(\d+)", log)
        check_s = int(checked[-1]) / 1000 if checked else None
        server.stop()
        return (elapsed, before, peak[0], record_s, check_s, progress_seen), drvs, work
    finally:
        if server.process.poll() is None:
            server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--binary", default=BINARY)
    parser.add_argument("--postgres", default="",
                        help="a PostgreSQL URL: each run gets a new database beside it, left for inspection")
    args = parser.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} does not exist: run `cargo build --release` first")
    env = nix_env()
    print(f"jobs: {args.jobs}, database: {'PostgreSQL' if args.postgres else 'SQLite'}")
    # What the runs wrote is deleted once they are all done: ext4 passes
    # over inodes freed in the last minutes when it allocates one (its
    # `recently_deleted`), so 60,000 files deleted between two runs made
    # every file the next one wrote slower, Nix's as much as Orthrus's
    # (nix-instantiate of 20,000 jobs: 5 s after a quiet minute, 20 s
    # right after a deletion).
    leftovers, work_dirs = [], []
    try:
        for workers in [int(w) for w in args.workers.split(",")]:
            run_workers(args, workers, env, leftovers, work_dirs)
    finally:
        for work in work_dirs:
            shutil.rmtree(work, ignore_errors=True)
        delete_paths(leftovers, env)


def run_workers(args, workers, env, leftovers, work_dirs):
    """One worker count: Orthrus and nix-instantiate taking turns, `--rounds` times."""
    orthrus, nix, parallel, figures = [], [], [], None
    def run_orthrus():
        nonlocal figures
        figures, drvs, work = bench_orthrus(args.binary, args.jobs, workers, env, args.postgres)
        leftovers.extend(drvs)
        work_dirs.append(work)
        orthrus.append(figures[0])

    def run_nix():
        elapsed, drvs = bench_nix(args.jobs, env)
        leftovers.extend(drvs)
        nix.append(elapsed)
        if workers > 1:
            elapsed, drvs = bench_nix(args.jobs, env, workers)
            leftovers.extend(drvs)
            parallel.append(elapsed)

    for round in range(max(1, args.rounds)):
        for run in (run_orthrus, run_nix) if round % 2 == 0 else (run_nix, run_orthrus):
            run()
    _, before, peak, record_s, check_s, progress_seen = figures
    rounds = "  ".join(f"{o:.2f}/{n:.2f}" for o, n in zip(orthrus, nix))
    print(f"workers {workers}: orthrus {median(orthrus):7.2f} s   nix-instantiate {median(nix):7.2f} s   "
          f"ratio of medians {median(orthrus) / median(nix):.2f}   (rounds, orthrus/nix: {rounds})")
    if parallel:
        print(f"  {workers} nix-instantiate at once on parts of it: {median(parallel):.2f} s "
              f"({median(parallel) / median(nix):.2f} of one; orthrus / that: {median(orthrus) / median(parallel):.2f})")
    recording = f"{record_s:.2f} s ({record_s / orthrus[-1] * 100:.0f}% of it)" if record_s is not None else "n/a"
    if check_s is not None:
        recording += f"; checking outputs against the .drv files {check_s:.2f} s"
    print(f"  last round: recording {recording}; server RSS {before:.0f} MiB before, {peak:.0f} MiB at peak "
          f"(+{peak - before:.0f} MiB); progress shown: {'yes' if progress_seen else 'no'}")


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


if __name__ == "__main__":
    main()
