#!/usr/bin/env python3
"""Web processes behind a load balancer: requests per second of
`GET /build/N` and `GET /job/P/J/JOB/latest` through nginx to one and to
two `orthrus serve --roles web` processes on one PostgreSQL, beside the
physical limit: nginx answering the same JSON from a file.

A process with every other role builds one job first. The load is wrk's,
with keep-alive, on loopback; everything shares this machine's cores, so
a second web process helps only where one process does not use them all.

    bench/cluster.py [--seconds 10] [--connections 32] [--binary target/release/orthrus]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from orthrus_bench import BINARY, free_port, nix_env

PG_BIN = next((os.path.join("/usr/lib/postgresql", v, "bin") for v in sorted(os.listdir("/usr/lib/postgresql"), reverse=True)),
              None) if os.path.isdir("/usr/lib/postgresql") else None


def as_postgres(args):
    return ["runuser", "-u", "postgres", "--"] + args if os.geteuid() == 0 else args


def start_postgres(work):
    data = os.path.join(work, "pg")
    os.makedirs(data)
    if os.geteuid() == 0:
        shutil.chown(work, "postgres", "postgres")
        shutil.chown(data, "postgres", "postgres")
    subprocess.run(as_postgres([f"{PG_BIN}/initdb", "-A", "trust", "-U", "postgres", "--no-sync", "-D", data]),
                   check=True, capture_output=True)
    port = free_port()
    log = open(os.path.join(work, "pg.log"), "w")
    process = subprocess.Popen(as_postgres([f"{PG_BIN}/postgres", "-D", data, "-p", str(port), "-k", work,
                                            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                                            "-c", "max_connections=200"]), stdout=log, stderr=log)
    for _ in range(300):
        if subprocess.run([f"{PG_BIN}/pg_isready", "-h", "127.0.0.1", "-p", str(port)], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    subprocess.run([f"{PG_BIN}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "bench"], check=True)
    return process, f"postgres://postgres@127.0.0.1:{port}/bench"


class Process:
    """One `orthrus serve --roles ROLES` in a directory of its own."""

    def __init__(self, binary, work, name, database_url, roles, env, src_root):
        self.binary, self.env, self.roles = binary, env, roles
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = os.path.join(self.dir, "orthrus.toml")
        with open(self.config, "w") as f:
            f.write(f'data_dir = "{self.dir}/data"\ndatabase_url = "{database_url}"\n'
                    f'[web]\nlisten = "127.0.0.1:{self.port}"\n'
                    f'[evaluator]\nallowed_path_roots = ["{src_root}"]\n[gc]\nroots_dir = "{self.dir}/gcroots"\n')
        self.process = None

    def cli(self, *args, stdin=None):
        return subprocess.run([self.binary, *args, "--config", self.config], env=self.env, input=stdin,
                              text=True, check=True, capture_output=True).stdout

    def start(self):
        log = open(os.path.join(self.dir, "server.log"), "a")
        self.process = subprocess.Popen([self.binary, "serve", "--roles", self.roles, "--config", self.config],
                                        env=self.env, stdout=log, stderr=log)
        for _ in range(1500):
            try:
                urllib.request.urlopen(self.base + "/status")
                return self
            except urllib.error.HTTPError:
                return self
            except OSError:
                time.sleep(0.02)
        sys.exit("orthrus did not start: see " + os.path.join(self.dir, "server.log"))

    def stop(self):
        if self.process:
            self.process.terminate()
            self.process.wait()


def request(base, token, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Accept": "application/json", "Authorization": "Bearer " + token}
    with urllib.request.urlopen(urllib.request.Request(base + path, data=data, method=method, headers=headers)) as r:
        return json.loads(r.read() or b"null")


def wrk(url, seconds, connections):
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-H", "Accept: application/json", url],
                         check=True, capture_output=True, text=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        sys.exit(f"{url}: {errors.group(1)} answers were errors:\n{out}")
    return rate


def nginx(work, one, two, static_dir):
    """nginx with three servers: to one web process, to two, and files."""
    ports = [free_port() for _ in range(3)]
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    upstream one {{ server 127.0.0.1:{one[0].port}; keepalive 64; }}
    upstream two {{ server 127.0.0.1:{two[0].port}; server 127.0.0.1:{two[1].port}; keepalive 64; }}
    server {{ listen 127.0.0.1:{ports[0]}; location / {{ proxy_pass http://one; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
    server {{ listen 127.0.0.1:{ports[1]}; location / {{ proxy_pass http://two; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
    server {{ listen 127.0.0.1:{ports[2]}; root {static_dir}; default_type application/json; }}
}}
""")
    process = subprocess.Popen(["nginx", "-c", conf, "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return process, ports


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--binary", default=BINARY)
    args = parser.parse_args()
    for tool in ["wrk", "nginx", "runuser"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed (apt install wrk nginx util-linux)")
    env = nix_env()
    work = tempfile.mkdtemp(prefix="orthrus-cluster-bench-")
    os.chmod(work, 0o755)
    processes, pg, lb = [], None, None
    try:
        pg, url = start_postgres(work)
        src = os.path.join(work, "src")
        os.makedirs(src)
        with open(os.path.join(src, "release.nix"), "w") as f:
            f.write('{ nonce }: { hello = derivation { name = "hello"; inherit nonce; system = builtins.currentSystem;'
                    ' builder = "/bin/sh"; args = [ "-c" "echo hello > $out" ]; }; }\n')
        roles = Process(args.binary, work, "roles", url, "evaluator,queue,notifier,publisher,maintenance", env, work)
        roles.cli("migrate")
        roles.cli("user", "add", "bench", "--role", "admin", "--password-stdin", stdin="bench-password\n")
        token = roles.cli("user", "token", "bench", "--scope", "all", "--name", "bench").strip()
        processes.append(roles.start())
        webs = [Process(args.binary, work, f"web{i}", url, "web", env, work).start() for i in range(2)]
        processes.extend(webs)
        base = webs[0].base
        request(base, token, "PUT", "/project/bench", {"displayname": "bench"})
        request(base, token, "PUT", "/jobset/bench/main", {
            "nixexprinput": "src", "nixexprpath": "release.nix", "checkinterval": 0,
            "inputs": {"src": {"type": "path", "value": src},
                       "nonce": {"type": "string", "value": str(time.time_ns())}}})
        request(base, token, "POST", "/api/push?jobsets=bench:main")
        build = {}
        for _ in range(1200):
            evals = request(base, token, "GET", "/jobset/bench/main/evals")["evals"]
            if evals:
                build = request(base, token, "GET", f"/build/{evals[0]['builds'][0]}")
                if build.get("finished") == 1:
                    break
            time.sleep(0.1)
        else:
            sys.exit("the build did not finish: see " + work)
        build_id = build["id"]
        static = os.path.join(work, "static")
        os.makedirs(static)
        body = urllib.request.urlopen(urllib.request.Request(f"{base}/build/{build_id}",
                                                             headers={"Accept": "application/json"})).read()
        with open(os.path.join(static, "build.json"), "wb") as f:
            f.write(body)
        lb, (to_one, to_two, files) = nginx(work, webs[:1], webs, static)
        print(f"wrk -t2 -c{args.connections} -d{args.seconds}s, keep-alive; requests per second")
        print(f"{'path':<34} {'1 web':>9} {'2 webs':>9} {'2/1':>6} {'nginx file':>11} {'1 web/file':>11}")
        ceiling = wrk(f"http://127.0.0.1:{files}/build.json", args.seconds, args.connections)
        for path in [f"/build/{build_id}", "/job/bench/main/hello/latest"]:
            one = wrk(f"http://127.0.0.1:{to_one}{path}", args.seconds, args.connections)
            two = wrk(f"http://127.0.0.1:{to_two}{path}", args.seconds, args.connections)
            print(f"{path:<34} {one:>9.0f} {two:>9.0f} {two / one:>6.2f} {ceiling:>11.0f} {one / ceiling:>11.2f}")
    finally:
        if lb:
            lb.terminate()
        for process in processes:
            process.stop()
        if pg:
            pg.terminate()
            pg.wait()
        if sys.exc_info()[0] is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
