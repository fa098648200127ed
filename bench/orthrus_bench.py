"""What the benchmark scripts share: a free port, Nix settings for a root
install without daemon or network, and an Orthrus server run from the
release binary with an admin token."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

NIX_CONFIG = "build-users-group =\nsandbox = false\nsubstituters =\n"
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BINARY = os.path.join(ROOT, "target", "release", "orthrus")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    """A process's resident memory in MiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def delete_paths(paths, env):
    """Deletes a run's store paths (those nothing outside the run holds), a
    few thousand per call to stay under the argument-length limit. A path
    still referred to by one in a later call survives its call: the
    leftovers go round again while that makes progress."""
    while paths:
        for i in range(0, len(paths), 5000):
            subprocess.run(["nix-store", "--delete", "--ignore-liveness", *paths[i:i + 5000]], env=env,
                           capture_output=True)
        left = [p for p in paths if os.path.lexists(p)]
        if len(left) == len(paths):
            break
        paths = left


def store_paths_named(marker):
    """The store paths whose name holds `marker` (a run's salt), outputs
    and derivations alike."""
    store = "/nix/store"
    return [os.path.join(store, name) for name in os.listdir(store) if marker in name]


def nix_env():
    """The environment for Orthrus and Nix: NIX_CONFIG defaults to the settings above."""
    env = dict(os.environ)
    env.setdefault("NIX_CONFIG", NIX_CONFIG)
    env["RUST_LOG"] = "warn"
    return env


class Server:
    """`orthrus serve` in `work`, with an admin user and its API token."""

    def __init__(self, binary, work, env, extra="", max_jobs=2, workers=2):
        self.binary, self.work, self.env = binary, work, env
        self.max_jobs, self.workers = max_jobs, workers
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = os.path.join(work, "orthrus.toml")
        self.token = ""
        self.process = None
        self.configure(extra)

    def configure(self, extra):
        """Rewrites the configuration, with `extra` tables at its end; takes
        effect at the next start."""
        with open(self.config, "w") as f:
            f.write(f"""data_dir = "{self.work}/data"
[web]
listen = "127.0.0.1:{self.port}"
[evaluator]
poll_interval_secs = 1
workers = {self.workers}
allowed_path_roots = ["{self.work}"]
[queue]
max_jobs = {self.max_jobs}
[gc]
# The run's own roots: the machine's directory (gcroots/orthrus) would keep
# every run's links after its paths are deleted, and each server would
# read all of them when it updates its roots.
roots_dir = "{self.work}/gcroots"
{extra}
""")

    def cli(self, *args, stdin=None):
        return subprocess.run([self.binary, *args, "--config", self.config], env=self.env, input=stdin,
                              text=True, check=True, capture_output=True).stdout

    def start(self):
        if not self.token:
            self.cli("user", "add", "bench", "--role", "admin", "--password-stdin", stdin="bench-password\n")
            self.token = self.cli("user", "token", "bench", "--scope", "all", "--name", "bench").strip()
        log = open(os.path.join(self.work, "server.log"), "a")
        self.process = subprocess.Popen([self.binary, "serve", "--config", self.config], env=self.env,
                                        stdout=log, stderr=log)
        # A first start compiles the built-in plugins (cached afterwards).
        for _ in range(3000):
            try:
                self.request("GET", "/")
                return
            except OSError:
                time.sleep(0.02)
        sys.exit("the server did not start: see " + os.path.join(self.work, "server.log"))

    def stop(self):
        self.process.terminate()
        self.process.wait()

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "Authorization": "Bearer " + self.token}
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req) as response:
            return json.loads(response.read() or b"null")

    def queued(self):
        return int(urllib.request.urlopen(self.base + "/api/nrqueue").read())

    def create_jobset(self, src, nonce):
        """Project `bench`, jobset `main` evaluating `src/release.nix` with `nonce`."""
        self.request("PUT", "/project/bench", {"displayname": "bench"})
        self.request("PUT", "/jobset/bench/main", {
            "nixexprinput": "src", "nixexprpath": "release.nix", "checkinterval": 0,
            "inputs": {"src": {"type": "path", "value": src}, "nonce": {"type": "string", "value": nonce}},
        })
