#!/usr/bin/env python3
"""The queue runner at nixpkgs scale (issue 22): N queued builds over a
shared dependency graph of depth 5.

The graph: N top-level jobs (level 4), each depending on two of N/10
derivations (level 3), each on two of N/100 (level 2), and so on down to
N/10,000 leaves (level 0): about 1.11 N derivations, each a trivial
`/bin/sh` build, named after a fresh salt so that nothing is found built.

    bench/queue_runner.py [--jobs 100000] [--build-secs 30] [--max-jobs 2] [--workers 2] [--binary target/release/orthrus]

It times:
  * the evaluation (not the subject here, printed for scale);
  * building for --build-secs with the whole queue loaded: steps per
    second, and every scheduling pass (`orthrus_queue_scheduling_pass_seconds`);
  * a restart with the queue full: from the server process starting to its
    first build step, then --build-secs of building again, with the
    passes of that run (loading included).

Build throughput against `nix-store --realise` of the same derivations is
bench/pipeline.py (`--jobs 10000 --machine local`). Every store path the run
made (named after its salt) is deleted afterwards (`nix-store --delete`).
"""

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.request

from orthrus_bench import BINARY, Server, delete_paths, nix_env, rss_mib, store_paths_named

EXPRESSION = """{ salt }:
let
  widths = [ WIDTHS ];
  mk = level: i: deps: derivation {
    name = "q${salt}-${toString level}-${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo ${toString i} > $out" ];
    inherit deps;
  };
  mod = a: b: a - (a / b) * b;
  above = level: below:
    let n = builtins.length below; in
    builtins.genList (i: mk level i [ (builtins.elemAt below (mod i n)) (builtins.elemAt below (mod (i * 7 + 3) n)) ])
      (builtins.elemAt widths level);
  level0 = builtins.genList (i: mk 0 i [ ]) (builtins.elemAt widths 0);
  top = above 4 (above 3 (above 2 (above 1 level0)));
in builtins.listToAttrs (builtins.genList (i: { name = "job${toString i}"; value = builtins.elemAt top i; }) (builtins.length top))
"""

# Bucket bounds are 10 µs times powers of two: 10.24 ms is the one at the goal.
GOAL_SECONDS = 0.01024


def widths(n):
    return [max(1, n // 10 ** (4 - level)) for level in range(5)]


def write_expression(directory, n):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "release.nix"), "w") as f:
        f.write(EXPRESSION.replace("WIDTHS", " ".join(str(w) for w in widths(n))))


class Scrape:
    """One reading of /metrics: what this benchmark looks at."""

    def __init__(self, server):
        request = urllib.request.Request(server.base + "/metrics",
                                         headers={"Authorization": "Bearer " + server.token})
        text = urllib.request.urlopen(request).read().decode()
        self.buckets = {}
        self.passes = self.pass_seconds = 0.0
        self.steps = 0.0
        self.running = 0.0
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            value = float(value)
            if name.startswith("orthrus_queue_scheduling_pass_seconds_bucket"):
                self.buckets[float(re.search(r'le="([^"]+)"', name).group(1))] = value
            elif name == "orthrus_queue_scheduling_pass_seconds_count":
                self.passes = value
            elif name == "orthrus_queue_scheduling_pass_seconds_sum":
                self.pass_seconds = value
            elif name.startswith("orthrus_build_steps_total"):
                self.steps += value
            elif name == "orthrus_queue_steps_running":
                self.running = value

    def passes_report(self, since=None):
        """Passes since an earlier reading: how many, their mean, how many
        over the goal, and the bucket the slowest fell in."""
        def delta(get):
            return get(self) - (get(since) if since else 0)
        count = delta(lambda r: r.passes)
        if count == 0:
            return "no passes"
        total = delta(lambda r: r.pass_seconds)
        within = {bound: delta(lambda r: r.buckets.get(bound, 0)) for bound in self.buckets}
        over = count - max((n for b, n in within.items() if b <= GOAL_SECONDS), default=0)
        slowest = min((b for b, n in within.items() if n >= count), default=None)
        slowest = f"≤ {slowest * 1000:.2f} ms" if slowest not in (None, float("inf")) else "beyond the last bucket"
        return (f"{count:.0f} passes, mean {total / count * 1000:.3f} ms, {over:.0f} over "
                f"{GOAL_SECONDS * 1000:.2f} ms, slowest {slowest}")


def build_for(server, seconds):
    start = Scrape(server)
    time.sleep(seconds)
    end = Scrape(server)
    return start, end


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100000)
    parser.add_argument("--build-secs", type=float, default=30)
    parser.add_argument("--max-jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4))
    parser.add_argument("--binary", default=BINARY)
    args = parser.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} does not exist: run `cargo build --release` first")
    env = nix_env()
    salt = f"{time.time_ns()}"
    work = tempfile.mkdtemp(prefix="orthrus-bench-queue-")
    src = os.path.join(work, "src")
    write_expression(src, args.jobs)
    server = Server(args.binary, work, env, max_jobs=args.max_jobs, workers=args.workers)
    try:
        server.start()
        start = time.monotonic()
        server.request("PUT", "/project/bench", {"displayname": "bench"})
        server.request("PUT", "/jobset/bench/main", {
            "nixexprinput": "src", "nixexprpath": "release.nix", "checkinterval": 0,
            "inputs": {"src": {"type": "path", "value": src}, "salt": {"type": "string", "value": salt}},
        })
        while True:
            jobset = server.request("GET", "/jobset/bench/main")
            if jobset.get("lastcheckedtime") and not jobset.get("starttime"):
                break
            time.sleep(0.2)
        evaluated = time.monotonic() - start
        queued = server.queued()
        if queued < args.jobs * 0.9:
            sys.exit(f"expected about {args.jobs} queued builds, found {queued}: {jobset.get('errormsg') or work}")
        derivations = sum(widths(args.jobs))
        print(f"jobs: {args.jobs} over {derivations} derivations (levels {widths(args.jobs)}), "
              f"max-jobs {args.max_jobs}, evaluator workers {args.workers}")
        print(f"evaluation and queueing:        {evaluated:8.2f} s ({queued} builds queued at its end)")

        before, after = build_for(server, args.build_secs)
        steps = after.steps - before.steps
        print(f"building with the queue loaded: {steps / args.build_secs:8.1f} steps/s over {args.build_secs:.0f} s; "
              f"server RSS {rss_mib(server.process.pid):.0f} MiB")
        print(f"  passes: {after.passes_report(before)}")
        print(f"  passes since start (evaluation included): {after.passes_report()}")

        server.stop()
        restarted = time.monotonic()
        server.start()
        answering = time.monotonic() - restarted
        while True:
            reading = Scrape(server)
            if reading.steps > 0 or reading.running > 0:
                break
            if time.monotonic() - restarted > 600:
                sys.exit("no build step started within 10 minutes of the restart")
            time.sleep(0.02)
        first = time.monotonic() - restarted
        print(f"restart with {server.queued()} builds queued: answering HTTP after {answering:.2f} s, "
              f"first build step after {first:.2f} s")
        time.sleep(args.build_secs)
        end = Scrape(server)
        print(f"  {args.build_secs:.0f} s later: {end.steps / (time.monotonic() - restarted):.1f} steps/s since the "
              f"restart; passes: {end.passes_report()}; server RSS {rss_mib(server.process.pid):.0f} MiB")
    finally:
        if server.process and server.process.poll() is None:
            server.stop()
        # The server logs each pass over 10 ms with what it did.
        log = os.path.join(work, "server.log")
        if os.path.exists(log):
            with open(log) as f:
                slow = [line.strip() for line in f if "slow scheduling pass" in line]
            print(f"passes the server logged as slow: {len(slow)}", *slow[:5], sep="\n  ")
        shutil.rmtree(work, ignore_errors=True)
        # Referrers first: a derivation outlives its call while a higher
        # level still refers to it.
        paths = store_paths_named(f"q{salt}-")
        paths.sort(key=lambda p: -int(p.split("-")[2]))
        delete_paths(paths, env)
        left = len(store_paths_named(f"q{salt}-"))
        print(f"store paths made by the run: {len(paths)}, left after deleting: {left}")


if __name__ == "__main__":
    main()
