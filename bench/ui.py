#!/usr/bin/env python3
"""The web pages on a big jobset: time to first byte, total time, size and
database queries of the jobset, evaluation, build and job pages when the
jobset has N jobs (20,000 by default) and two evaluations of them.

    python3 bench/ui.py [--jobs 20000] [--runs 5] [--binary PATH]

The server has no build machine (`machines.local = false`), so the builds
stay queued: the pages are measured, not Nix. The query count and their
time come from the `Server-Timing` header each answer carries; the figure
to compare a page with is the time its queries took in the database."""

import argparse
import http.client
import os
import re
import statistics
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
            ]
            print(f"{'page':24} {'first byte':>11} {'total':>9} {'size':>9} {'queries':>8} {'in db':>9} {'db share':>9}")
            for name, path in pages:
                fetch(server, path)  # warm the caches once
                runs = [fetch(server, path) for _ in range(args.runs)]
                first_byte = statistics.median(r[0] for r in runs) * 1000
                total = statistics.median(r[1] for r in runs) * 1000
                size, queries = runs[-1][2], runs[-1][3]
                db_ms = statistics.median(r[4] for r in runs)
                print(f"{name:24} {first_byte:9.1f}ms {total:7.1f}ms {size / 1024:7.1f}KiB {queries:8d} "
                      f"{db_ms:7.1f}ms {db_ms / total:9.2f}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
