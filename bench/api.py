#!/usr/bin/env python3
"""HTTP API throughput with 100,000 builds in the database.

Seeds an Orthrus SQLite database with one jobset of JOBS jobs and EVALS
evaluations (JOBS x EVALS finished builds), starts the release binary, and
loads it from a generator on loopback (oha: `cargo install oha`), beside
nginx serving the same build JSON as a static file in the same run:

    GET /job/P/J/JOB/latest   following the 302 to /build/N
    GET /build/N
    GET /build.json           from nginx, the physical limit of a JSON answer

Prints requests per second and p50/p99 latency of each, and the ratios.
The load part is `compare_with_nginx()`, which bench/scale.py runs against
its server too.

    bench/api.py [--builds 100000] [--seconds 10] [--connections 32]
"""

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

from orthrus_bench import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
OHA = shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NGINX_NAME = "nginx: the same JSON, static"


def missing_tools():
    """The load tools that are not installed: oha (`cargo install oha`) and nginx."""
    return [name for name, path in [("oha", OHA), ("nginx", NGINX)] if not os.path.exists(path)]


def seed(db_path, jobs, evals):
    """One project and jobset; `evals` evaluations of `jobs` builds each."""
    db = sqlite3.connect(db_path)
    now = int(time.time())
    with db:
        db.execute("INSERT INTO projects (name, display_name, description, homepage, owner, enabled, hidden,"
                   " enable_dynamic_run_command) VALUES ('bench', 'bench', '', '', '', 1, 0, 0)")
        project = db.execute("SELECT id FROM projects WHERE name = 'bench'").fetchone()[0]
        db.execute("INSERT INTO jobsets (project_id, name, description, nixexpr_input, nixexpr_path, force_eval,"
                   " enabled, enable_email, hidden, email_override, keep_nr, check_interval, scheduling_shares, type,"
                   " enable_dynamic_run_command) VALUES (?, 'main', '', 'src', 'release.nix', 0, 0, 0, 0, '', 3, 0,"
                   " 100, 0, 0)", (project,))
        jobset = db.execute("SELECT id FROM jobsets").fetchone()[0]
        build_id = 0
        for e in range(evals):
            cursor = db.execute("INSERT INTO jobset_evals (jobset_id, timestamp, checkout_time, eval_time,"
                                " has_new_builds, hash, nr_builds, nr_errors) VALUES (?, ?, 0, 1, 1, ?, ?, 0)",
                                (jobset, now - evals + e, f"hash{e}", jobs))
            eval_id = cursor.lastrowid
            builds, outputs, members = [], [], []
            for j in range(jobs):
                build_id += 1
                h = f"{build_id:032d}"
                builds.append((build_id, now - evals + e, jobset, f"job{j}", f"job{j}-1.{e}",
                               f"/nix/store/{h}-job{j}.drv", now - evals + e, now - evals + e + 1))
                outputs.append((build_id, "out", f"/nix/store/{h}-job{j}-1.{e}"))
                members.append((eval_id, build_id))
            db.executemany("INSERT INTO builds (id, finished, timestamp, jobset_id, job, nix_name, drv_path, system,"
                           " max_silent, timeout, is_channel, is_aggregate, priority, global_priority, start_time,"
                           " stop_time, is_cached_build, build_status, size, closure_size, keep) VALUES"
                           " (?, 1, ?, ?, ?, ?, ?, 'x86_64-linux', 7200, 36000, 0, 0, 100, 0, ?, ?, 0, 0, 1000, 5000,"
                           " 0)", builds)
            db.executemany("INSERT INTO build_outputs (build_id, name, path) VALUES (?, ?, ?)", outputs)
            db.executemany("INSERT INTO jobset_eval_members (eval_id, build_id, is_new) VALUES (?, ?, 1)", members)
    db.execute("ANALYZE")
    db.close()
    return build_id


def oha(url, seconds, connections):
    output = subprocess.run([OHA, "-z", f"{seconds}s", "-c", str(connections), "--redirect", "10", "--no-tui",
                             "--output-format", "json", url],
                            check=True, capture_output=True, text=True).stdout
    report = json.loads(output)
    summary, percentiles = report["summary"], report["latencyPercentiles"]
    codes = report.get("statusCodeDistribution", {})
    return summary["requestsPerSec"], percentiles["p50"] * 1000, percentiles["p99"] * 1000, codes


def compare_with_nginx(base, build, latest_path, work, seconds, connections):
    """Loads the Orthrus server at `base` with oha: `latest_path` (a
    `.../latest` URL, the redirect followed) and /build/`build`, as JSON;
    then nginx serving the same build JSON from a file in `work`. Returns
    {name: (requests/s, p50 ms, p99 ms, status codes)}."""
    build_url = f"{base}/build/{build}?content-type=application/json"
    body = urllib.request.urlopen(build_url).read()
    root = os.path.join(work, "nginx")
    os.makedirs(os.path.join(root, "logs"), exist_ok=True)
    with open(os.path.join(root, "build.json"), "wb") as f:
        f.write(body)
    # nginx's workers run as an unprivileged user: let them read it.
    for path in [work, root]:
        os.chmod(path, 0o755)
    os.chmod(os.path.join(root, "build.json"), 0o644)
    nginx_port = free_port()
    with open(os.path.join(root, "nginx.conf"), "w") as f:
        f.write(f"""worker_processes auto;
pid {root}/nginx.pid;
error_log {root}/logs/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  default_type application/json;
  server {{ listen 127.0.0.1:{nginx_port}; root {root}; }}
}}
""")
    nginx = subprocess.Popen([NGINX, "-p", root, "-c", os.path.join(root, "nginx.conf"), "-g", "daemon off;"])
    try:
        time.sleep(0.5)
        targets = [
            ("GET /job/P/J/JOB/latest (redirect followed)", f"{base}{latest_path}?content-type=application/json"),
            ("GET /build/N", build_url),
            (NGINX_NAME, f"http://127.0.0.1:{nginx_port}/build.json"),
        ]
        return {name: oha(url, seconds, connections) for name, url in targets}
    finally:
        nginx.terminate()
        nginx.wait()


def print_comparison(results):
    print(f"{'request':48} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}  statuses")
    for name, (rps, p50, p99, codes) in results.items():
        print(f"{name:48} {rps:10.0f} {p50:8.2f} {p99:8.2f}  {codes}")
    nginx_rps = results[NGINX_NAME][0]
    for name, (rps, *_rest) in results.items():
        if name != NGINX_NAME:
            print(f"ratio nginx / {name}: {nginx_rps / rps:.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builds", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--binary", default=os.path.join(HERE, "..", "target", "release", "orthrus"))
    args = parser.parse_args()
    if missing_tools():
        sys.exit(f"{' and '.join(missing_tools())} needed: `cargo install oha`, `apt install nginx-light`")
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} does not exist: run `cargo build --release` first")

    work = tempfile.mkdtemp(prefix="orthrus-bench-api-")
    port = free_port()
    config = os.path.join(work, "orthrus.toml")
    with open(config, "w") as f:
        f.write(f'data_dir = "{work}/data"\n[web]\nlisten = "127.0.0.1:{port}"\n')
    env = dict(os.environ, RUST_LOG="warn")
    subprocess.run([args.binary, "migrate", "--config", config], check=True, env=env, capture_output=True)
    start = time.monotonic()
    last = seed(os.path.join(work, "data", "orthrus.sqlite"), args.jobs, args.builds // args.jobs)
    print(f"seeded {last} builds in {time.monotonic() - start:.1f} s")

    server = subprocess.Popen([args.binary, "serve", "--config", config], env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/api/nrqueue")
                break
            except OSError:
                time.sleep(0.05)
        results = compare_with_nginx(base, last, f"/job/bench/main/job{args.jobs // 2}/latest", work, args.seconds,
                                     args.connections)
        print(f"\n{last} builds; {args.connections} connections, {args.seconds} s each; {os.cpu_count()} cores shared by server and load\n")
        print_comparison(results)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
