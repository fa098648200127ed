#!/usr/bin/env python3
"""Orthrus against the physical limit: Nix building the same work directly.

Times Orthrus evaluating and building N trivial independent derivations
(from the jobset being created to the last build recorded), and
`nix-store --realise` of N equivalent derivations in one call with the same
max-jobs, then prints both and their ratio.

    bench/pipeline.py [--jobs 500] [--max-jobs 2] [--machine local|ssh|both] [--binary target/release/orthrus]

With `--machine ssh` Orthrus builds on an SSH machine only: an sshd
started on a loopback port with a key pair and host key made for the run,
speaking Nix's serve protocol over SSH (the same store, so no copies).

Each run uses fresh derivations (a nonce in every one), so nothing is
found already built; the store paths a run made are deleted after it. Nix runs with the settings of NIX_CONFIG, defaulting
to those of a root install without daemon or network.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from orthrus_bench import BINARY, Server, delete_paths, free_port, nix_env, store_paths_named

EXPRESSION = """{ nonce }:
let
  mk = i: derivation {
    name = "bench-${nonce}-${toString i}";
    inherit nonce;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo ${toString i} > $out" ];
  };
in builtins.listToAttrs (builtins.genList (i: { name = "job${toString i}"; value = mk i; }) N)
"""


def write_expression(directory, n):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "release.nix"), "w") as f:
        f.write(EXPRESSION.replace(" N)", f" {n})"))


class Sshd:
    """An sshd on loopback whose `nix-store --serve` uses this run's Nix settings."""

    def __init__(self, env):
        self.dir = tempfile.mkdtemp(prefix="orthrus-bench-sshd-")
        for key in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(self.dir, key)], check=True)
        shutil.copy(os.path.join(self.dir, "client_key.pub"), os.path.join(self.dir, "authorized_keys"))
        nix_store = shutil.which("nix-store")
        options = " ".join(f"--option {line.split('=')[0].strip()} '{line.split('=', 1)[1].strip()}'"
                           for line in env["NIX_CONFIG"].splitlines() if "=" in line)
        self.wrapper = os.path.join(self.dir, "remote-nix-store")
        with open(self.wrapper, "w") as f:
            f.write(f"#!/bin/sh\nexec {nix_store} {options} \"$@\"\n")
        os.chmod(self.wrapper, 0o755)
        self.port = free_port()
        config = os.path.join(self.dir, "sshd_config")
        with open(config, "w") as f:
            f.write(f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.dir}/host_key\n"
                    f"AuthorizedKeysFile {self.dir}/authorized_keys\nPidFile {self.dir}/sshd.pid\n"
                    "StrictModes no\nUsePAM no\nPasswordAuthentication no\nPermitRootLogin prohibit-password\n")
        os.makedirs("/run/sshd", exist_ok=True)
        sshd = next(p for p in ("/usr/sbin/sshd", "/usr/bin/sshd") if os.path.exists(p))
        self.process = subprocess.Popen([sshd, "-D", "-f", config], stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port)).close()
                break
            except OSError:
                time.sleep(0.05)

    def machine_table(self, max_jobs):
        user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        system = json.loads(subprocess.run(["nix-instantiate", "--eval", "--json", "--expr", "builtins.currentSystem"],
                                           capture_output=True, text=True, check=True).stdout)
        with open(os.path.join(self.dir, "host_key.pub")) as f:
            host_key = f.read().strip()
        return (f"[machines]\nlocal = false\n[[machines.machine]]\n"
                f"uri = \"ssh://{user}@127.0.0.1:{self.port}?remote-program={self.wrapper}\"\n"
                f"systems = [\"{system}\"]\nssh_key = \"{self.dir}/client_key\"\nmax_jobs = {max_jobs}\n"
                f"public_host_key = \"{host_key}\"\n")

    def stop(self):
        self.process.terminate()
        self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def bench_orthrus(binary, n, max_jobs, workers, env, machines=""):
    work = tempfile.mkdtemp(prefix="orthrus-bench-")
    src = os.path.join(work, "src")
    write_expression(src, n)
    server = Server(binary, work, env, machines, max_jobs=max_jobs, workers=workers)
    nonce = f"orthrus-{time.time_ns()}"
    server.start()
    try:
        start = time.monotonic()
        server.create_jobset(src, nonce)
        evaluated = None
        while True:
            evals = server.request("GET", "/jobset/bench/main/evals")["evals"]
            if evals and evaluated is None:
                evaluated = time.monotonic()
                if len(evals[0]["builds"]) != n:
                    sys.exit(f"expected {n} builds, got {len(evals[0]['builds'])}")
            if evals and server.queued() == 0:
                break
            time.sleep(0.02)
        done = time.monotonic()
        builds = server.request("GET", f"/eval/{evals[0]['id']}/builds")
        failed = [b["job"] for b in builds if b["buildstatus"] != 0]
        if failed:
            sys.exit(f"builds failed: {failed[:5]}")
        return done - start, evaluated - start, done - evaluated
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
        delete_paths(store_paths_named(f"bench-{nonce}-"), env)


def bench_nix(n, max_jobs, env):
    work = tempfile.mkdtemp(prefix="orthrus-bench-nix-")
    nonce = f"nix-{time.time_ns()}"
    try:
        write_expression(work, n)
        start = time.monotonic()
        drvs = subprocess.run(["nix-instantiate", os.path.join(work, "release.nix"), "--argstr", "nonce", nonce],
                              env=env, check=True, capture_output=True, text=True).stdout.split()
        instantiated = time.monotonic()
        subprocess.run(["nix-store", "--realise", "--max-jobs", str(max_jobs), *drvs],
                       env=env, check=True, capture_output=True)
        done = time.monotonic()
        return done - instantiated, instantiated - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
        delete_paths(store_paths_named(f"bench-{nonce}-"), env)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--max-jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4))
    parser.add_argument("--machine", choices=["local", "ssh", "both"], default="both",
                        help="build on the local machine, on an SSH machine on loopback, or measure both")
    parser.add_argument("--binary", default=BINARY)
    args = parser.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} does not exist: run `cargo build --release` first")
    env = nix_env()

    runs = []

    def report(name, figures):
        # As soon as measured: at 10,000 derivations `nix-store --realise`
        # takes many times longer than Orthrus.
        total, evaluation, building = figures
        print(f"orthrus on the {name + ':':17} {total:8.2f} s  (eval recorded after {evaluation:.2f} s; "
              f"building {building:.2f} s, {building / args.jobs * 1000:.1f} ms per build)", flush=True)
        runs.append((name, figures))

    if args.machine in ("local", "both"):
        report("local machine", bench_orthrus(args.binary, args.jobs, args.max_jobs, args.workers, env))
    if args.machine in ("ssh", "both"):
        sshd = Sshd(env)
        try:
            table = sshd.machine_table(args.max_jobs)
            report("SSH machine", bench_orthrus(args.binary, args.jobs, args.max_jobs, args.workers, env, table))
        finally:
            sshd.stop()
    realise, instantiate = bench_nix(args.jobs, args.max_jobs, env)
    print(f"derivations:                     {args.jobs} (max-jobs {args.max_jobs}, evaluator workers {args.workers})")
    print(f"nix-instantiate (not in ratio):  {instantiate:8.2f} s")
    print(f"nix-store --realise, one call:   {realise:8.2f} s  ({realise / args.jobs * 1000:.1f} ms per build)")
    for name, (total, evaluation, building) in runs:
        print(f"orthrus on the {name}:")
        print(f"  ratio orthrus / nix-store:     {total / realise:8.2f}   (building only: {building / realise:.2f}; "
              f"with instantiation: {total / (realise + instantiate):.2f})")


if __name__ == "__main__":
    main()
