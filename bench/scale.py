#!/usr/bin/env python3
"""Answer times with a big history (issue 23): 100,000 to ten million builds.

Makes a history with bench/history.py (or reuses one: --reuse TARGET),
starts `orthrus serve` on it and, for each request below, times the first
byte of --requests sequential answers on one keep-alive connection
(http.client; redirects not followed), after one request not counted
(its time is the "first" column: caches cold). A request type stops early
after --budget seconds (the n column says how many were timed).

Queries per request come from the server's `Server-Timing` header
(`db;dur=…;desc="N queries"`), which it sends to a logged-in caller: one
authenticated request of each kind after the timed ones. It counts the
queries of the handler; an answer streamed after its first byte (the
evaluation lists' build ids) reads more as it writes, which the "last ms"
column (the whole answer read) shows.

The server runs every role, as on one machine, configured so that its
background work leaves the history as it is: no local machine (the queued
builds wait as unsupported for 30 days), GC roots in its work directory,
retention keeping every evaluation, and a Nix state directory of its own
(NIX_STATE_DIR) in which the outputs the GC roots keep are registered as
valid, so that its GC sweep does not mark every build collected (see
nix_state()). Timing starts once its first GC roots update, the loading of
the queue and the writing of the search rows and job names of every build
(bench/history.py leaves them to the server, which writes those after its
cursor when it starts, as after an upgrade) are done (each printed).

    bench/scale.py --builds N [--postgres URL | --sqlite PATH | --reuse TARGET] [--requests 50]
                   [--budget 60] [--load] [--keep] [--binary target/release/orthrus]

--postgres URL names the database to make (its name defaults to
orthrus_scale_N); without --postgres or --sqlite the history is an SQLite
file in the work directory. A history made here is dropped at the end
unless --keep; one given by --reuse is kept.

--load also runs bench/api.py's load (oha against /build/N and
/job/P/J/JOB/latest, beside nginx serving the same JSON from a file) on
this server and history.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import api  # noqa: E402
import history  # noqa: E402
from orthrus_bench import BINARY, NIX_CONFIG, free_port  # noqa: E402

JSON = "application/json"
HTML = "text/html"
# What the server logs when its startup work is done (RUST_LOG below).
SETTLED = {"GC roots": "GC roots updated", "queue": "queued builds loaded", "search index": "search index merged"}


def nix_state(work, target):
    """A Nix state directory of the server's own (NIX_STATE_DIR) whose
    database says valid what a real server's store would hold: the outputs
    of the builds the GC roots keep (they are not on disk; nothing reads
    them here) and the queued builds' derivations (on disk, instantiated
    by bench/history.py). Without it, the server's GC roots update finds
    every finished build's outputs gone and marks them collected, and
    `latest` has nothing to answer."""
    state = os.path.join(work, "nix-state")
    env = dict(os.environ, NIX_STATE_DIR=state)
    env.setdefault("NIX_CONFIG", NIX_CONFIG)
    subprocess.run(["nix-store", "--check-validity", "--print-invalid", "/nix/store/" + "0" * 32 + "-init"], env=env,
                   capture_output=True)
    db = history.open_target(target)
    outputs = [row[0] for row in db.query(
        "SELECT o.path FROM build_outputs o JOIN builds b ON b.id = o.build_id WHERE b.finished "
        "AND b.build_status IN (0, 6) AND NOT b.outputs_collected")]
    queued = db.query("SELECT b.drv_path, o.name, o.path FROM builds b JOIN build_outputs o ON o.build_id = b.id "
                      "WHERE NOT b.finished")
    nix = sqlite3.connect(os.path.join(state, "db", "db.sqlite"))
    now = int(time.time())
    digest = "sha256:" + "0" * 64
    with nix:
        nix.executemany("INSERT OR IGNORE INTO ValidPaths (path, hash, registrationTime, narSize) VALUES (?, ?, ?, 0)",
                        [(path, digest, now) for path in outputs])
        drvs = sorted({drv for drv, _, _ in queued if os.path.exists(drv)})
        nix.executemany("INSERT OR IGNORE INTO ValidPaths (path, hash, registrationTime, narSize) VALUES (?, ?, ?, 0)",
                        [(drv, digest, now) for drv in drvs])
        nix.executemany("INSERT OR IGNORE INTO DerivationOutputs (drv, id, path) "
                        "SELECT id, ?, ? FROM ValidPaths WHERE path = ?",
                        [(name, path, drv) for drv, name, path in queued])
    nix.close()
    return state, len(outputs), len(drvs)


class ScaleServer:
    """`orthrus serve` on an existing database, with an admin token."""

    def __init__(self, binary, work, database_url, nix_state_dir):
        self.binary, self.work = binary, work
        self.port = free_port()
        self.config = os.path.join(work, "orthrus.toml")
        self.log_path = os.path.join(work, "server.log")
        self.env = dict(os.environ, RUST_LOG="warn,orthrus::gc=info,orthrus::queue=info,orthrus::retention=info,orthrus::eval=info",
                        NIX_STATE_DIR=nix_state_dir)
        self.env.setdefault("NIX_CONFIG", NIX_CONFIG)
        with open(self.config, "w") as f:
            f.write(f"""data_dir = "{work}/data"
database_url = "{database_url}"
[web]
listen = "127.0.0.1:{self.port}"
[machines]
local = false
unsupported_timeout_secs = 2592000
[gc]
roots_dir = "{work}/gcroots"
[retention]
evals_per_jobset = 0
""")
        self.process = None
        self.token = ""

    def cli(self, *args, stdin=None):
        result = subprocess.run([self.binary, *args, "--config", self.config], env=self.env, input=stdin, text=True,
                                capture_output=True)
        if result.returncode != 0:
            sys.exit(f"orthrus {args[0]} {args[1]} failed: {result.stderr.strip()}")
        return result.stdout

    def start(self, timeout=600):
        # `user add` creates or updates: a reused history may have the user.
        self.cli("user", "add", "bench", "--role", "admin", "--password-stdin", stdin="bench-password\n")
        self.token = self.cli("user", "token", "bench", "--scope", "all", "--name", "scale").strip()
        log = open(self.log_path, "a")
        self.started = time.monotonic()
        self.process = subprocess.Popen([self.binary, "serve", "--config", self.config], env=self.env, stdout=log,
                                        stderr=log)
        while time.monotonic() - self.started < timeout:
            if self.process.poll() is not None:
                sys.exit(f"the server stopped: see {self.log_path}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/api/nrqueue")
                connection.getresponse().read()
                return time.monotonic() - self.started
            except OSError:
                time.sleep(0.1)
        sys.exit(f"the server did not answer in {timeout} s: see {self.log_path}")

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def settle(self, timeout):
        """Waits for the startup work; returns {what: seconds since the start or None}."""
        found = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            for what, line in SETTLED.items():
                if what not in found and line in text:
                    found[what] = time.monotonic() - self.started
            if len(found) == len(SETTLED):
                break
            time.sleep(0.5)
        return {what: found.get(what) for what in SETTLED}

    def rss(self):
        figures = {}
        try:
            with open(f"/proc/{self.process.pid}/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("VmRSS", "VmHWM"):
                        figures[key] = int(value.split()[0]) / 1024
        except OSError:
            pass
        return figures

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Client:
    """One keep-alive connection."""

    def __init__(self, port, token):
        self.port, self.token = port, token
        self.connection = None

    def get(self, path, accept, auth=False):
        """(status, seconds to the first byte, seconds to the last, body, headers)."""
        headers = {"Accept": accept}
        if auth:
            headers["Authorization"] = "Bearer " + self.token
        for attempt in range(2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=900)
            try:
                started = time.perf_counter()
                self.connection.request("GET", path, headers=headers)
                response = self.connection.getresponse()
                first_byte = time.perf_counter() - started
                body = response.read()
                last_byte = time.perf_counter() - started
                if response.getheader("Connection", "").lower() == "close":
                    self.connection.close()
                    self.connection = None
                return response.status, first_byte, last_byte, body, response.headers
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.connection.close()
                self.connection = None
                if attempt:
                    raise
        raise AssertionError

    def queries(self, path, accept):
        """The queries the server says (Server-Timing) one answer took, or None."""
        _, _, _, _, headers = self.get(path, accept, auth=True)
        found = re.search(r'desc="(\d+) queries"', headers.get("Server-Timing", ""))
        return int(found.group(1)) if found else None


def requests(f):
    """(label, path, accept) of every request timed, from history.facts()."""
    p, j = f["project"], f["jobset"]
    q = urllib.parse.quote
    job = q(f["job"], safe="")
    search = [("job-name substring", f["substring"]), ("word in a name", f["word"]),
              ("output hash prefix", f["out_prefix"]), ("derivation hash prefix", f["drv_prefix"])]
    out = [
        ("GET /build/N (JSON)", f"/build/{f['build']}", JSON),
        ("/job/P/J/JOB/latest (302)", f"/job/{p}/{j}/{job}/latest", JSON),
        ("/job/P/J/JOB/latest-finished (302)", f"/job/{p}/{j}/{job}/latest-finished", JSON),
        ("/api/latestbuilds?nr=10", "/api/latestbuilds?nr=10", JSON),
        ("/api/latestbuilds?nr=10&project", f"/api/latestbuilds?nr=10&project={p}", JSON),
        ("/api/latestbuilds?nr=10&project&jobset", f"/api/latestbuilds?nr=10&project={p}&jobset={j}", JSON),
        ("/api/latestbuilds?nr=10&project&jobset&job",
         f"/api/latestbuilds?nr=10&project={p}&jobset={j}&job={job}", JSON),
        ("/api/queue?nr=100", "/api/queue?nr=100", JSON),
        ("/jobset/P/J/evals (JSON)", f"/jobset/{p}/{j}/evals", JSON),
        ("/jobset/P/J/evals (HTML)", f"/jobset/{p}/{j}/evals", HTML),
        ("/jobset/P/J (HTML)", f"/jobset/{p}/{j}", HTML),
        ("/jobset/P/J (JSON)", f"/jobset/{p}/{j}", JSON),
        (f"/eval/N ({f['eval_size']:,} builds, HTML)", f"/eval/{f['eval']}", HTML),
        (f"/eval/N ({f['eval_size']:,} builds, JSON)", f"/eval/{f['eval']}", JSON),
        ("/job/P/J/JOB (HTML, job with metrics)", f"/job/{p}/{j}/{q(f['metrics_job'], safe='')}", HTML),
        ("/queue (HTML)", "/queue", HTML),
    ]
    for what, text in search:
        for kind, accept in [("HTML", HTML), ("JSON", JSON)]:
            out.append((f"/search {what} ({kind})", f"/search?query={q(text, safe='')}", accept))
    out += [
        ("/api/jobsets?project=P", f"/api/jobsets?project={p}", JSON),
        ("/ (HTML)", "/", HTML),
        ("/project/P (HTML)", f"/project/{p}", HTML),
    ]
    return out


def search_targets(f):
    """label prefix -> the build a search should find."""
    return {"/search job-name substring": f["substring_build"], "/search word in a name": f["word_build"],
            "/search output hash prefix": f["build"], "/search derivation hash prefix": f["build"]}


def found(body, accept, build):
    if accept == JSON:
        try:
            answer = json.loads(body)
        except ValueError:
            return False
        ids = {b.get("id") for key in ("builds", "buildsdrv") for b in answer.get(key, []) if isinstance(b, dict)}
        return build in ids
    return re.search(rf'/build/{build}"', body.decode(errors="replace")) is not None


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def measure(client, label, path, accept, n, budget):
    status, first, _, body, _ = client.get(path, accept)
    times, totals = [], []
    started = time.monotonic()
    statuses = {status}
    while len(times) < n and time.monotonic() - started < budget:
        status, seconds, total, body, _ = client.get(path, accept)
        statuses.add(status)
        times.append(seconds)
        totals.append(total)
    return dict(label=label, path=path, accept=accept, statuses=sorted(statuses), first=first * 1000,
                p50=percentile(times, 0.5) * 1000, p90=percentile(times, 0.9) * 1000,
                last=percentile(totals, 0.5) * 1000, n=len(times), queries=client.queries(path, accept),
                bytes=len(body), body=body)


def print_table(results, title):
    print(f"\n{title}\n")
    print(f"{'request':52} {'status':>7} {'first ms':>9} {'p50 ms':>9} {'p90 ms':>9} {'last ms':>9} {'n':>4} "
          f"{'queries':>7} {'bytes':>10}")
    for r in results:
        queries = "n/a" if r["queries"] is None else str(r["queries"])
        status = ",".join(map(str, r["statuses"]))
        print(f"{r['label']:52} {status:>7} {r['first']:9.1f} {r['p50']:9.1f} {r['p90']:9.1f} {r['last']:9.1f} "
              f"{r['n']:4} {queries:>7} {r['bytes']:10,}")


def log_problems(text):
    """The server log's warnings and errors, each kind once with its count."""
    kinds = {}
    for line in text.splitlines():
        if " WARN " in line or " ERROR " in line or "panicked" in line:
            # Without the timestamp, and numbers folded, to group alike lines.
            key = re.sub(r"\d+", "N", line.split(" ", 1)[-1])[:160]
            kinds.setdefault(key, [0, line])[0] += 1
    return sorted(kinds.values(), key=lambda k: -k[0])


def default_postgres_name(url, builds):
    parts = urllib.parse.urlsplit(url)
    if parts.path.strip("/"):
        return url
    return urllib.parse.urlunsplit(parts._replace(path=f"/orthrus_scale_{builds}"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builds", type=int, default=100_000)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--postgres", metavar="URL")
    where.add_argument("--sqlite", metavar="PATH")
    where.add_argument("--reuse", metavar="TARGET", help="a history made before: postgres:// URL or SQLite path")
    parser.add_argument("--queued", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--budget", type=float, default=60, help="seconds at most per request type")
    parser.add_argument("--settle", type=float, default=900, help="seconds to wait for the startup work")
    parser.add_argument("--keep", action="store_true", help="keep the history made here")
    parser.add_argument("--load", action="store_true", help="also bench/api.py's load with oha and nginx")
    parser.add_argument("--seconds", type=int, default=10, help="--load: seconds per target")
    parser.add_argument("--connections", type=int, default=32, help="--load: connections")
    parser.add_argument("--binary", default=BINARY)
    args = parser.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} does not exist: run `cargo build --release` first")

    work = tempfile.mkdtemp(prefix="orthrus-bench-scale-")
    made = None
    if args.reuse:
        target = args.reuse
    else:
        target = (default_postgres_name(args.postgres, args.builds) if args.postgres
                  else args.sqlite or os.path.join(work, "history.sqlite"))
        history.generate(target, args.builds, queued=args.queued, binary=args.binary)
        made = target
    server = None
    try:
        f = history.facts(target)
        backend = "PostgreSQL" if history.is_postgres(target) else "SQLite"
        database_url = target if history.is_postgres(target) else "sqlite://" + os.path.abspath(target)
        print(f"\n{f['builds']:,} builds on {backend} ({target}); {f['queued']:,} queued; "
              f"big jobset {f['project']}:{f['jobset']}, eval {f['eval']} of {f['eval_size']:,} builds")
        state, n_outputs, n_drvs = nix_state(work, target)
        print(f"server's Nix state {state}: {n_outputs:,} kept outputs and {n_drvs:,} queued derivations valid")
        server = ScaleServer(args.binary, work, database_url, state)
        answering = server.start()
        print(f"server answering {answering:.1f} s after its start; waiting for its startup work")
        settled = server.settle(args.settle)
        for what, seconds in settled.items():
            print(f"  {what}: " + (f"done {seconds:.1f} s after the start" if seconds is not None
                                   else f"not done after {args.settle:.0f} s"))
        size = history.open_target(target).size()
        print(f"database with the server's search rows and job names: {size / 2 ** 30:.2f} GiB, "
              f"{size / f['builds']:.0f} bytes per build")
        client = Client(server.port, server.token)
        results = []
        for label, path, accept in requests(f):
            try:
                result = measure(client, label, path, accept, args.requests, args.budget)
            except (OSError, http.client.HTTPException) as e:
                client = Client(server.port, server.token)
                result = dict(label=label, path=path, accept=accept, statuses=[f"error: {e}"], first=0, p50=0, p90=0,
                              last=0, n=0, queries=None, bytes=0, body=b"")
            results.append(result)
            print(f"  {label}: p50 {result['p50']:.1f} ms ({result['n']} requests, status "
                  f"{','.join(map(str, result['statuses']))})", flush=True)
        rss = server.rss()
        title = (f"{f['builds']:,} builds, {backend}; {os.cpu_count()} cores; time to first byte (p50, p90) and "
                 f"to the last (median) over {args.requests} sequential requests on one keep-alive connection")
        print_table(results, title)
        print("\nsearches (did the answer hold the build searched for?):")
        targets = search_targets(f)
        for r in results:
            for prefix, build in targets.items():
                if r["label"].startswith(prefix):
                    verdict = "found" if found(r["body"], r["accept"], build) else "not found"
                    print(f"  {r['label']:52} build {build}: {verdict}")
        print(f"\nserver memory after the run: RSS {rss.get('VmRSS', 0):.0f} MiB, peak {rss.get('VmHWM', 0):.0f} MiB")
        if args.load:
            missing = api.missing_tools()
            if missing:
                print(f"\n--load skipped: {' and '.join(missing)} not installed (`cargo install oha`)")
            else:
                base = f"http://127.0.0.1:{server.port}"
                job = urllib.parse.quote(f["job"], safe="")
                results = api.compare_with_nginx(base, f["build"], f"/job/{f['project']}/{f['jobset']}/{job}/latest",
                                                 work, args.seconds, args.connections)
                print(f"\nload: {args.connections} connections, {args.seconds} s each; {os.cpu_count()} cores shared "
                      "by server and load\n")
                api.print_comparison(results)
        problems = log_problems(server.log())
        print(f"\nserver log ({server.log_path}): {sum(n for n, _ in problems)} warnings and errors"
              + (":" if problems else ""))
        for n, line in problems[:20]:
            print(f"  {n:5}x {line[:300]}")
    finally:
        if server:
            server.stop()
        if made and not args.keep:
            history.drop(made)
        elif made:
            print(f"history kept: {made}")
        # The work directory keeps the configuration and server.log; the GC
        # roots (links, one per kept path) and the Nix state go.
        for directory in ["gcroots", "nix-state"]:
            shutil.rmtree(os.path.join(work, directory), ignore_errors=True)
        print(f"work directory: {work}")

if __name__ == "__main__":
    main()
