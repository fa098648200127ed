#!/usr/bin/env python3
"""Notifier delivery: how fast, and how soon.

1. Throughput: events delivered per second to a notifier plugin that does
   nothing (`tests/plugins/noop-notifier`), on a backlog: a first run
   makes the notifier known, a second (without it) evaluates and builds N
   trivial jobs, writing about 4 events per build, and a third delivers
   the backlog while the script samples `/api/notifiers`. The physical
   limit is one bare plugin call per event: `cargo bench --bench plugins`
   measures that call.
2. Latency: the built-in `webhook` notifier POSTs `build-finished` to a
   local receiver; each job's builder writes the time as its last act, and
   the receiver notes when the webhook arrives.

    bench/notify.py [--events-jobs 1000] [--latency-jobs 20] [--binary target/release/orthrus]
"""

import argparse
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from orthrus_bench import BINARY, ROOT, Server, nix_env


EXPRESSION = """{ nonce }:
let
  mk = i: derivation {
    name = "notify-bench-${toString i}";
    inherit nonce;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" "date +%s.%N > $out" ];
  };
in builtins.listToAttrs (builtins.genList (i: { name = "job${toString i}"; value = mk i; }) N)
"""


def build_jobs(server, n):
    """Evaluates and builds `n` jobs whose builders write the time; waits until done."""
    src = os.path.join(server.work, "src")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "release.nix"), "w") as f:
        f.write(EXPRESSION.replace(" N)", f" {n})"))
    server.create_jobset(src, f"notify-{time.time_ns()}")
    while not (server.request("GET", "/jobset/bench/main/evals")["evals"] and server.queued() == 0):
        time.sleep(0.1)


def build_noop_plugin(env):
    target = os.path.join(ROOT, "target", "test-plugins")
    subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip2", "--manifest-path",
                    os.path.join(ROOT, "tests/plugins/noop-notifier/Cargo.toml"), "--target-dir", target],
                   env=env, check=True, capture_output=True)
    return os.path.join(target, "wasm32-wasip2/release/orthrus_test_plugin_noop_notifier.wasm")


def throughput(binary, env, jobs):
    work = tempfile.mkdtemp(prefix="orthrus-bench-notify-")
    try:
        plugins = os.path.join(work, "plugins")
        os.makedirs(plugins)
        # A plugin is named by its file.
        shutil.copy(build_noop_plugin(env), os.path.join(plugins, "noop-notifier.wasm"))
        plugin_dir = f'[plugins]\ndir = "{plugins}"\n'
        with_notifier = plugin_dir + '\n[[notifiers]]\nname = "noop"\nplugin = "noop-notifier"\n'
        server = Server(binary, work, env, with_notifier)
        server.start()  # the notifier's cursor starts here, before any event
        server.stop()
        server.configure(plugin_dir)  # events pile up while no notifier runs
        server.start()
        build_jobs(server, jobs)
        server.stop()
        server.configure(with_notifier)
        server.start()
        samples = []
        while True:
            state = server.request("GET", "/api/notifiers")[0]
            samples.append((time.monotonic(), state["delivered"], state["cursor"], state["latest_event"]))
            if state["cursor"] >= state["latest_event"]:
                break
            time.sleep(0.02)
        server.stop()
        first = next((s for s in samples if s[1] > 0), samples[0])
        last = samples[-1]
        delivered = last[1] - first[1]
        seconds = last[0] - first[0]
        return last[1], delivered, seconds
    finally:
        shutil.rmtree(work, ignore_errors=True)


class Receiver(http.server.BaseHTTPRequestHandler):
    arrivals = []

    def do_POST(self):
        arrived = time.time()
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        event = json.loads(body)
        path = dict((name, p) for name, p in event["build"]["outputs"])["out"]
        with open(path) as f:
            finished = float(f.read())
        Receiver.arrivals.append(arrived - finished)

    def log_message(self, *args):
        pass


def latency(binary, env, jobs):
    work = tempfile.mkdtemp(prefix="orthrus-bench-webhook-")
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    port = receiver.server_address[1]
    try:
        config = f"""[plugins.grants.webhook]
http = ["127.0.0.1:{port}"]

[[notifiers]]
plugin = "webhook"
events = ["build-finished"]
settings = {{ url = "http://127.0.0.1:{port}/hook", secret = "bench" }}
"""
        server = Server(binary, work, env, config)
        server.start()
        build_jobs(server, jobs)
        deadline = time.monotonic() + 60
        while len(Receiver.arrivals) < jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stop()
        return sorted(Receiver.arrivals)
    finally:
        receiver.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events-jobs", type=int, default=1000)
    parser.add_argument("--latency-jobs", type=int, default=20)
    parser.add_argument("--binary", default=BINARY)
    args = parser.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} does not exist: run `cargo build --release` first")
    env = nix_env()

    total, delivered, seconds = throughput(args.binary, env, args.events_jobs)
    print(f"backlog: {total} events from {args.events_jobs} builds, to a notifier that does nothing")
    print(f"  delivered {delivered} events in {seconds:.2f} s: {delivered / seconds:,.0f} events/s "
          f"({seconds / delivered * 1e6:.0f} µs per event)")
    arrivals = latency(args.binary, env, args.latency_jobs)
    if not arrivals:
        sys.exit("no webhook arrived")
    ms = [a * 1000 for a in arrivals]
    print(f"build finished -> webhook arrived ({len(ms)} builds, built-in webhook plugin, loopback receiver):")
    print(f"  median {statistics.median(ms):.1f} ms, min {ms[0]:.1f} ms, max {ms[-1]:.1f} ms")


if __name__ == "__main__":
    main()
