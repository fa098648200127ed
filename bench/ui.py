#!/usr/bin/env python3
"""The web pages on a big jobset: time to first byte, total time, size and
database queries of the jobset, evaluation, build, job and list pages when
the jobset has N jobs (20,000 by default) and two evaluations of them; then
the log viewer on a log of M megabytes (50 by default), against the floor
of decompressing that log (`zstd -d`).

    python3 bench/ui.py [--jobs 20000] [--runs 5] [--log-mb 50] [--binary PATH]

The server has no build machine (`machines.local = false`), so the builds
stay queued: the pages are measured, not Nix. The query count and their
time come from the `Server-Timing` header each answer carries; the figure
to compare a page with is the time its queries took in the database."""

import argparse
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from orthrus_bench import BINARY, Server, nix_env

RELEASE_NIX = """{ nonce }:
let
  mk = i: derivation {
    name = "job-${toString i}";
    inherit nonce;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo ${toString i} > $out" ];
  };
in builtins.listToAttrs (map (i: { name = "job${toString i}"; value = mk i; }) (builtins.genList (i: i) JOBS))
"""


def fetch(server, path):
    """(seconds to the first byte, seconds in all, bytes, queries, ms in the database)"""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    start = time.perf_counter()
    connection.request("GET", path, headers={"Accept": "text/html", "Authorization": "Bearer " + server.token})
    response = connection.getresponse()
    first = time.perf_counter() - start
    body = response.read()
    total = time.perf_counter() - start
    connection.close()
    if response.status != 200:
        sys.exit(f"{path}: {response.status} {body[:300]!r}")
    timing = response.getheader("Server-Timing") or ""
    queries = re.search(r'"(\d+) queries"', timing)
    db_ms = re.search(r"dur=([\d.]+)", timing)
    return first, total, len(body), int(queries.group(1)) if queries else -1, float(db_ms.group(1)) if db_ms else 0.0


def wait_for_evals(server, count, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        evals = server.request("GET", "/jobset/bench/main/evals")["evals"]
        if len(evals) >= count:
            return evals[0]
        time.sleep(1)
    sys.exit(f"evaluation {count} did not finish in {timeout} s; see {server.work}/server.log")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--log-mb", type=int, default=50)
    parser.add_argument("--binary", default=BINARY)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="orthrus-ui-bench-") as work:
        src = os.path.join(work, "src")
        os.makedirs(src)
        with open(os.path.join(src, "release.nix"), "w") as f:
            f.write(RELEASE_NIX.replace("JOBS", str(args.jobs)))
        server = Server(args.binary, work, nix_env(), extra="[machines]\nlocal = false\n")
        server.start()
        try:
            started = time.perf_counter()
            server.create_jobset(src, "first")
            first = wait_for_evals(server, 1, 3600)
            evaluated = time.perf_counter() - started
            server.request("PUT", "/jobset/bench/main", {"inputs": {
                "src": {"type": "path", "value": src}, "nonce": {"type": "string", "value": "second"}}})
            server.request("POST", "/api/push?jobsets=bench:main&force=1")
            second = wait_for_evals(server, 2, 3600)
            build = server.request("GET", f"/eval/{second['id']}")["builds"][0]
            print(f"{args.jobs} jobs, 2 evaluations ({2 * args.jobs} builds, queued); "
                  f"first evaluation took {evaluated:.0f} s ({args.binary})")
            pages = [
                ("jobset, first page", "/jobset/bench/main"),
                ("jobset, last page", f"/jobset/bench/main?offset={max(args.jobs - 100, 0)}"),
                ("eval, with comparison", f"/eval/{second['id']}"),
                ("eval, failed only", f"/eval/{second['id']}?status=failed"),
                ("eval, first of two", f"/eval/{first['id']}"),
                ("build", f"/build/{build}"),
                ("job", "/job/bench/main/job1"),
                ("jobset's evaluations", "/jobset/bench/main/evals"),
                ("all evaluations", "/evals"),
                ("queue (first 500)", "/queue"),
                ("search by job name", "/search?query=job1999"),
                ("status", "/status"),
            ]
            measure(server, pages, args.runs)
        finally:
            server.stop()
    if args.log_mb > 0:
        log_viewer(args)


def measure(server, pages, runs_per_page):
    """Prints each page's figures; returns their median total times (ms)."""
    totals = []
    print(f"{'page':24} {'first byte':>11} {'total':>9} {'size':>9} {'queries':>8} {'in db':>9} {'db share':>9}")
    for name, path in pages:
        fetch(server, path)  # warm the caches once
        runs = [fetch(server, path) for _ in range(runs_per_page)]
        first_byte = statistics.median(r[0] for r in runs) * 1000
        total = statistics.median(r[1] for r in runs) * 1000
        size, queries = runs[-1][2], runs[-1][3]
        db_ms = statistics.median(r[4] for r in runs)
        print(f"{name:24} {first_byte:9.1f}ms {total:7.1f}ms {size / 1024:7.1f}KiB {queries:8d} "
              f"{db_ms:7.1f}ms {db_ms / total:9.2f}")
        totals.append(total)
    return totals


LOG_NIX = """{ nonce }:
{
  chatty = derivation {
    name = "chatty";
    inherit nonce;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" "seq -f '%g: a line of a long build log, as compilers write them by the thousand' 1 LINES; echo done > $out" ];
  };
}
"""


def log_viewer(args):
    """A build writing a log of `--log-mb` megabytes, then its pages."""
    with tempfile.TemporaryDirectory(prefix="orthrus-log-bench-") as work:
        src = os.path.join(work, "src")
        os.makedirs(src)
        with open(os.path.join(src, "release.nix"), "w") as f:
            # Lines of about 80 bytes, numbered (so not all alike).
            f.write(LOG_NIX.replace("LINES", str((args.log_mb << 20) // 80)))
        server = Server(args.binary, work, nix_env())
        server.start()
        try:
            server.create_jobset(src, str(time.time()))
            evaluation = wait_for_evals(server, 1, 600)
            build = server.request("GET", f"/eval/{evaluation['id']}")["builds"][0]
            deadline = time.time() + 600
            while server.request("GET", f"/build/{build}")["finished"] != 1:
                if time.time() > deadline:
                    sys.exit(f"the chatty build did not finish; see {work}/server.log")
                time.sleep(1)
            logs = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(work, "data"))
                    for name in names if name.endswith(".zst") and "chatty" in name]
            print(f"\nlog of {args.log_mb} MiB ({os.path.getsize(logs[0]) / 1024:.0f} KiB compressed)")
            pages = [
                ("log, its end", f"/build/{build}/log"),
                ("log, its start", f"/build/{build}/log?from=0"),
                ("log, the middle", f"/build/{build}/log?from={args.log_mb << 19}"),
            ]
            totals = measure(server, pages, args.runs)
            # The floor: decompressing the whole log, which every page does
            # to know where it ends.
            if shutil.which("zstd"):
                floor = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    subprocess.run(["zstd", "-dc", logs[0]], stdout=subprocess.DEVNULL, check=True)
                    floor.append(time.perf_counter() - start)
                floor_ms = statistics.median(floor) * 1000
                print(f"floor, zstd -d of the whole log: {floor_ms:.1f} ms; "
                      f"pages / floor: {', '.join(f'{t / floor_ms:.2f}' for t in totals)}")
            else:
                print("(no zstd program: the floor is not measured)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
