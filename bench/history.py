#!/usr/bin/env python3
"""A realistic build history written straight into an Orthrus database
(issue 23: ten million builds on PostgreSQL, one million on SQLite).

The schema is the binary's own (`orthrus migrate`); the rows are made here,
like hydra.nixos.org's history: ten projects of two to four jobsets each,
one big nixpkgs-like jobset (`nixpkgs:trunk`) whose evaluations have
100,000 members each (fewer when --builds is too small to hold two of
them), smaller jobsets of 100 to 5,000 jobs. Each evaluation gives a new
build to a fraction of its jobset's jobs (5-20 %) and points at the
previous builds for the rest (jobset_eval_members, is_new false), so that
member rows are about eight times the builds. Evaluation times spread over
the years, ascending with ids; builds have nix-base32 store paths,
outputs, steps with their outputs, products, metrics (a few jobs, so that
their pages have plots), aggregates with constituents, failed paths,
evaluation errors, evaluation inputs, and the binary cache's paths.
The newest evaluation (of nixpkgs:trunk) holds --queued unfinished builds:
their derivations are instantiated in the local Nix store (trivial ones,
salted per database) so that the queue runner of a server started on the
database keeps them queued instead of failing them as unreadable; give a
server `[machines] local = false` and a long `unsupported_timeout_secs`
so that nothing builds them (bench/scale.py does).

Builds outside what the GC roots keep (each jobset's newest `keep_nr`
evaluations, and the one with queued builds) have `outputs_collected` set,
as the server's GC sweep would have found them. The sweep marks any other
finished build whose outputs its Nix store lacks, so a server started on
the history must see the kept outputs as valid: bench/scale.py gives it a
Nix state directory of its own where they are registered. Jobsets are
enabled with `check_interval = 0` and no trigger: nothing evaluates.

    bench/history.py --builds N [--postgres URL | --sqlite PATH] [--queued Q] [--drop] [--replace]

--postgres URL names the database to create (postgres://user@host:port/NAME;
the server's `postgres` database is used to create and drop it). Loading:
PostgreSQL drops the foreign keys and the indexes that back no constraint,
then one `COPY ... FREEZE` per table right after a TRUNCATE in the same
transaction (no WAL with wal_level=minimal), then recreates the indexes
and foreign keys (validated), sets the identity sequences and runs VACUUM
ANALYZE. SQLite loads with journal_mode=OFF, synchronous=OFF, indexes
dropped and recreated, foreign_key_check, ANALYZE, then journal_mode=WAL.

--drop removes the database (or the SQLite file with -wal and -shm) and
the queued builds' derivations. From Python: generate(), drop(), facts().
"""

import argparse
import array
import calendar
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from orthrus_bench import BINARY, NIX_CONFIG  # noqa: E402

B32 = "0123456789abcdfghijklmnpqrsvwxyz"
SYSTEMS4 = ["x86_64-linux", "aarch64-linux", "x86_64-darwin", "aarch64-darwin"]
BATCH = 20_000
PSQL_ENV = dict(os.environ, PGCLIENTENCODING="UTF8")
MASK40 = (1 << 40) - 1


def epoch(date):
    return calendar.timegm(time.strptime(date, "%Y-%m-%d"))


# Projects and their jobsets: (name, nominal jobs, share of the builds, options).
PKG_SETS = ["", "", "", "python311Packages", "python312Packages", "haskellPackages", "perlPackages", "rPackages",
            "nodePackages", "emacsPackages", "linuxPackages", "ocamlPackages", "rubyPackages", "lua54Packages"]
NIXOS_SETS = ["nixos.tests", "nixos.tests", "nixpkgs", "nixpkgs.python311Packages", "nixos.closures"]
TOOL_SETS = ["build", "buildStatic", "tests", "checks", "packages", "installerTests"]

CATALOG = [
    ("nixpkgs", "Nixpkgs", "Nix Packages collection", "https://github.com/NixOS/nixpkgs", [
        ("trunk", 100_000, 0.50, dict(big=True, systems=SYSTEMS4, sets=PKG_SETS, shares=400, keep_nr=3,
                                      aggregates={"tested": 60, "unstable": 30}, metrics={"metrics": 6},
                                      files=["tarball", "manual"], input="nixpkgs",
                                      path="pkgs/top-level/release.nix")),
        ("staging-next", 5_000, 0.08, dict(systems=SYSTEMS4[:2], sets=PKG_SETS, shares=200, input="nixpkgs",
                                           path="pkgs/top-level/release.nix", since="2020-06-01")),
        ("release-23.11", 5_000, 0.04, dict(systems=SYSTEMS4[:2], sets=PKG_SETS, shares=100, input="nixpkgs",
                                            path="pkgs/top-level/release.nix", since="2023-11-01",
                                            until="2024-06-30", enabled=0)),
    ]),
    ("nixos", "NixOS", "The NixOS Linux distribution", "https://nixos.org", [
        ("trunk-combined", 5_000, 0.10, dict(systems=SYSTEMS4[:2], sets=NIXOS_SETS, shares=300, keep_nr=5,
                                             aggregates={"tested": 40}, metrics={"metrics": 2},
                                             channel="channel", files=["iso_minimal.x86_64-linux", "manual"],
                                             input="nixpkgs", path="nixos/release-combined.nix")),
        ("release-24.05", 3_000, 0.05, dict(systems=SYSTEMS4[:2], sets=NIXOS_SETS, shares=150, channel="channel",
                                            input="nixpkgs", path="nixos/release-combined.nix", since="2024-05-01")),
        ("unstable-small", 1_000, 0.04, dict(systems=SYSTEMS4[:1], sets=NIXOS_SETS, shares=100, channel="channel",
                                             input="nixpkgs", path="nixos/release-small.nix")),
    ]),
    ("nix", "Nix", "The purely functional package manager", "https://github.com/NixOS/nix", [
        ("master", 300, 0.03, dict(systems=SYSTEMS4, sets=TOOL_SETS, flake="github:NixOS/nix", shares=50,
                                   metrics={"perf.x86_64-linux": 3}, files=["binaryTarball.x86_64-linux"])),
        ("maintenance-2.18", 200, 0.01, dict(systems=SYSTEMS4, sets=TOOL_SETS, flake="github:NixOS/nix",
                                             since="2023-09-20", shares=20)),
    ]),
    ("hydra", "Hydra", "Hydra, the Nix-based continuous build system", "https://github.com/NixOS/hydra", [
        ("master", 150, 0.02, dict(systems=SYSTEMS4[:2], sets=TOOL_SETS, flake="github:NixOS/hydra", shares=20,
                                   fetch_error=True)),
        ("flake", 100, 0.01, dict(systems=SYSTEMS4[:2], sets=TOOL_SETS, flake="github:NixOS/hydra/flake",
                                  since="2021-02-01", shares=10)),
    ]),
    ("home-manager", "Home Manager", "Manage a user environment using Nix",
     "https://github.com/nix-community/home-manager", [
        ("master", 500, 0.03, dict(systems=SYSTEMS4[:2], sets=TOOL_SETS, input="home-manager", path="release.nix",
                                   shares=30, since="2020-01-01")),
        ("release-24.05", 500, 0.01, dict(systems=SYSTEMS4[:2], sets=TOOL_SETS, input="home-manager",
                                          path="release.nix", shares=10, since="2024-05-20")),
    ]),
    ("nix-community", "Nix community", "Community projects", "https://github.com/nix-community", [
        ("nur", 2_000, 0.03, dict(systems=SYSTEMS4[:1], sets=PKG_SETS, input="nur", path="ci.nix", shares=30)),
        ("emacs-overlay", 1_500, 0.02, dict(systems=SYSTEMS4[:2], sets=["emacsPackages"], input="overlay",
                                            path="hydra.nix", shares=20, since="2019-06-01")),
        ("nix-ld", 100, 0.005, dict(systems=SYSTEMS4[:2], sets=TOOL_SETS, flake="github:nix-community/nix-ld",
                                    shares=5, since="2022-01-01")),
    ]),
    ("patchelf", "PatchELF", "A small utility to modify the dynamic linker and RPATH of ELF executables",
     "https://github.com/NixOS/patchelf", [
        ("master", 100, 0.005, dict(systems=SYSTEMS4, sets=TOOL_SETS, flake="github:NixOS/patchelf", shares=5,
                                    files=["tarball"])),
        ("release", 100, 0.005, dict(systems=SYSTEMS4, sets=TOOL_SETS, flake="github:NixOS/patchelf/release",
                                     shares=5)),
    ]),
    ("disnix", "Disnix", "Distributed service deployment", "https://github.com/svanderburg/disnix", [
        ("disnix-trunk", 100, 0.005, dict(systems=SYSTEMS4[:1], sets=TOOL_SETS, input="disnix",
                                          path="release.nix", shares=5, files=["tarball"])),
        ("dysnomia", 100, 0.005, dict(systems=SYSTEMS4[:1], sets=TOOL_SETS, input="dysnomia", path="release.nix",
                                      shares=5)),
        ("disnix-extensions", 100, 0.005, dict(systems=SYSTEMS4[:1], sets=TOOL_SETS, input="extensions",
                                               path="release.nix", shares=5)),
    ]),
    ("nixops", "NixOps", "Deploying NixOS machines", "https://github.com/NixOS/nixops", [
        ("master", 200, 0.01, dict(systems=SYSTEMS4[:2], sets=TOOL_SETS, input="nixops", path="release.nix",
                                   shares=10)),
        ("plugins", 200, 0.005, dict(systems=SYSTEMS4[:2], sets=TOOL_SETS, input="nixops", path="plugins.nix",
                                     shares=5, since="2020-03-01")),
    ]),
    ("simple", "Simple", "Small examples", "https://example.org/simple", [
        ("hello", 100, 0.005, dict(systems=SYSTEMS4, sets=[""], input="src", path="release.nix", shares=1)),
        ("fetchers", 100, 0.005, dict(systems=SYSTEMS4[:1], sets=TOOL_SETS, input="src", path="fetchers.nix",
                                      shares=1)),
    ]),
]
HISTORY_START = "2019-01-01"

# Packages the searches of bench/scale.py look for, in the big jobset.
WELL_KNOWN = [("python311Packages", "numpy"), ("python312Packages", "numpy"), ("python311Packages", "requests"),
              ("python312Packages", "requests"), ("", "hello"), ("", "firefox"), ("", "openssl"), ("", "systemd"),
              ("", "gcc"), ("", "nodejs"), ("haskellPackages", "pandoc"), ("", "emacs"), ("", "vim"),
              ("python311Packages", "scipy"), ("", "curl"), ("", "git")]
SYLLABLES = ["ba", "be", "bo", "ca", "ci", "da", "de", "do", "fa", "fe", "ga", "gi", "ha", "ja", "jo", "ka", "ki", "la",
             "li", "lo", "ma", "me", "mi", "mo", "na", "ni", "pa", "pe", "pi", "po", "ra", "re", "ri", "ro", "sa", "se",
             "si", "so", "ta", "te", "ti", "tu", "va", "ve", "vi", "za", "ze", "zu", "xo", "ku"]
SUFFIXES = ["", "", "", "", "-utils", "-cli", "lib", "-bin", "d", "2", "-qt", "-gtk", "-tools", "-ng", "-rs", "-go"]
ADJECTIVES = ["Fast", "Small", "Simple", "Modern", "Portable", "Secure", "Lightweight", "Extensible", "Minimal",
              "Friendly", "Parallel", "Robust"]
NOUNS = ["JSON library", "HTTP client", "terminal emulator", "build tool", "image viewer", "text editor",
         "compression library", "database engine", "web framework", "window manager", "test runner",
         "parser generator", "font", "music player", "network daemon", "version control system"]
LICENSES = ["mit", "gpl3Plus", "asl20", "bsd3", "lgpl21Plus", "mpl20", "isc", "gpl2Only", "bsd2", "unfree"]
HANDLES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj",
           "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yves"]
STATUS_WEIGHTS = {0: 854, 1: 46, 2: 50, 3: 10, 4: 6, 6: 8, 7: 8, 8: 10, 9: 3, 10: 2, 11: 1, 12: 2}
METRIC_NAMES = [("nix-env.qaCount", ""), ("nix-env.qa.time", "s"), ("nix-env.qa.maxresident", "KiB"),
                ("nixos.smallContainer.time", "s"), ("nixos.kde.maxresident", "KiB"), ("nix.allocations", "")]
TABLES = ["projects", "jobsets", "jobset_inputs", "jobset_evals", "jobset_eval_inputs", "jobset_eval_members",
          "builds", "build_outputs", "build_steps", "build_step_outputs", "build_products", "build_metrics",
          "aggregate_constituents", "failed_paths", "evaluation_errors", "cache_paths"]


def say(*args):
    print(*args, flush=True)


class Jobset:
    def __init__(self, index, project_index, name, nominal, weight, options):
        self.index, self.id, self.project_index = index, index + 1, project_index
        self.name, self.nominal, self.weight, self.o = name, nominal, weight, options
        self.big = options.get("big", False)


# ---------------------------------------------------------------------------
# Store paths: nix base32 hash parts from build ids, unique by their first 8
# characters (a bijection of the id onto 40 bits), the rest from a pool.

class Hashes:
    def __init__(self, rng):
        quads = [a + b + c + d for a in B32 for b in B32 for c in B32 for d in B32]
        rng.shuffle(quads)
        self.quads = quads
        self.tails = ["".join(rng.choice(B32) for _ in range(24)) for _ in range(4096)]

    def make(self):
        quads, tails = self.quads, self.tails

        def h(x):
            y = (x * 0x9E3779B97F) & MASK40
            y ^= y >> 20
            return quads[y >> 20] + quads[y & 0xFFFFF] + tails[(y >> 7) & 4095]
        return h


# ---------------------------------------------------------------------------
# The plan: jobsets, their jobs, evaluations in time order, and for every
# build its job, evaluation and random bits (all in arrays).

class Plan:
    def __init__(self, n_builds, queued, seed, now=None, big_jobs=None, new_fraction=(0.05, 0.20)):
        self.n_builds, self.queued, self.seed = n_builds, queued, seed
        self.now = int(now or time.time())
        rng = self.rng = random.Random(seed)
        self.hashes = Hashes(rng)
        self.projects = []
        self.jobsets = []
        for p, (name, display, description, homepage, jobsets) in enumerate(CATALOG):
            self.projects.append(dict(id=p + 1, name=name, display=display, description=description,
                                      homepage=homepage))
            for (jname, nominal, weight, options) in jobsets:
                self.jobsets.append(Jobset(len(self.jobsets), p, jname, nominal, weight, options))
        total_w = sum(j.weight for j in self.jobsets)
        for j in self.jobsets:
            j.budget = int(n_builds * j.weight / total_w)
        big = next(j for j in self.jobsets if j.big)
        big.budget += n_builds - sum(j.budget for j in self.jobsets)
        for j in self.jobsets:
            if j.big:
                j.n_jobs = big_jobs or min(j.nominal, max(100, j.budget // 2))
            else:
                j.n_jobs = min(j.nominal, max(20, j.budget // 3))
            self.make_jobs(j)
        self.schedule(new_fraction)
        self.assign_builds()

    def project_of(self, jobset):
        return self.projects[jobset.project_index]

    # Jobs: specials (files, channel, metrics) first, packages, aggregates last.
    def make_jobs(self, js):
        rng, o = self.rng, js.o
        systems = o["systems"]
        specials = list(o.get("files", [])) + list(o.get("metrics", {}))
        if o.get("channel"):
            specials.append(o["channel"])
        aggregates = list(o.get("aggregates", {}))
        n_pkg_jobs = max(len(systems), js.n_jobs - len(specials) - len(aggregates))
        names, systems_of, pnames, versions = [], [], [], []
        seen = set()
        well_known = list(WELL_KNOWN) if js.big else []
        sets = o["sets"]
        while len(names) < n_pkg_jobs:
            if well_known:
                prefix, word = well_known.pop(0)
            else:
                word = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3, 3)))) + rng.choice(SUFFIXES)
                prefix = rng.choice(sets)
            attr = f"{prefix}.{word}" if prefix else word
            if attr in seen:
                continue
            seen.add(attr)
            if prefix.startswith("python3"):
                pname = f"python3.{prefix[7:9]}-{word}"
            elif prefix == "perlPackages":
                pname = f"perl5.38.2-{word}"
            elif prefix.endswith("tests"):
                pname = f"vm-test-run-{word}"
            else:
                pname = word
            version = f"{rng.randrange(0, 12)}.{rng.randrange(0, 30)}"
            for system in systems:
                if len(names) == n_pkg_jobs:
                    break
                names.append(f"{attr}.{system}")
                systems_of.append(system)
                pnames.append(pname)
                versions.append(version)
        n_packages = len(names)
        for special in specials:
            names.insert(0, special)
            systems_of.insert(0, "x86_64-linux")
            pnames.insert(0, f"{js.name}-{special.split('.')[0]}")
            versions.insert(0, "1.0")
        for aggregate in aggregates:
            names.append(aggregate)
            systems_of.append("x86_64-linux")
            pnames.append(aggregate)
            versions.append("1")
        js.jobs, js.systems_of, js.pnames, js.versions = names, systems_of, pnames, versions
        js.n_jobs = len(names)
        n_special = len(specials)
        js.first_agg = js.n_jobs - len(aggregates)
        js.n_special = n_special
        js.package_range = (n_special, n_special + n_packages)
        js.special = {name: i for i, name in enumerate(names[:n_special])}
        js.aggregate_jobs = {}
        for k, aggregate in enumerate(aggregates):
            count = min(o["aggregates"][aggregate], n_packages)
            js.aggregate_jobs[js.first_agg + k] = sorted(rng.sample(range(n_special, n_special + n_packages), count))
        js.metric_jobs = {js.special[name]: METRIC_NAMES[:count] for name, count in o.get("metrics", {}).items()}
        js.channel_job = js.special.get(o.get("channel"), -1)
        js.file_jobs = {js.special[name]: name for name in o.get("files", [])}
        # Per job text: description, license, homepage, maintainers (packages only).
        desc, lic, home, maint = [], [], [], []
        for i, pname in enumerate(pnames):
            if n_special <= i < n_special + n_packages:
                word = names[i].split(".")[-2]
                desc.append(f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}")
                lic.append(rng.choice(LICENSES))
                home.append(f"https://github.com/{word}/{word}")
                maint.append(", ".join(rng.sample(HANDLES, rng.randint(1, 3))))
            else:
                desc.append(None)
                lic.append(None)
                home.append(None)
                maint.append(None)
        js.desc, js.lic, js.home, js.maint = desc, lic, home, maint

    # How many new builds each evaluation of each jobset has, and when.
    def schedule(self, new_fraction):
        rng, now = self.rng, self.now
        lo, hi = new_fraction
        events = []
        for js in self.jobsets:
            # Specials and aggregates get a new build in every evaluation.
            n_always = len(js.aggregate_jobs) + js.n_special
            reserve = 0
            if js.big:
                reserve = min(js.n_jobs, max(self.queued + n_always, round(js.n_jobs * (lo + hi) / 2)))
            counts = [js.n_jobs]
            left = js.budget - js.n_jobs - reserve
            while left > 0:
                k = min(js.n_jobs, max(1 + n_always, min(left, round(js.n_jobs * rng.uniform(lo, hi)))))
                counts.append(k)
                left -= k
            if reserve:
                counts.append(reserve)
            js.new_counts = counts
            since = epoch(js.o.get("since", HISTORY_START))
            until = epoch(js.o["until"]) if "until" in js.o else now - 3600 - rng.randrange(0, 3600)
            n = len(counts) - (1 if js.big else 0)
            span = until - since
            times = [since + int((i + 0.5 + rng.uniform(-0.4, 0.4)) * span / n) for i in range(n)]
            if js.big:
                times.append(now - 600)
            js.eval_times = times
            js.n_evals = len(counts)
            for seq, (t, k) in enumerate(zip(times, counts)):
                events.append((t, js.index, seq, k))
        events.sort()
        self.n_evals = len(events)
        self.ev_ts = array.array("q", (e[0] for e in events))
        self.ev_js = array.array("h", (e[1] for e in events))
        self.ev_seq = array.array("i", (e[2] for e in events))
        self.ev_new = array.array("i", (e[3] for e in events))
        self.ev_first = array.array("q", [0]) * self.n_evals
        first = 1
        for e in range(self.n_evals):
            self.ev_first[e] = first
            first += self.ev_new[e]
        self.total = first - 1
        last = self.n_evals - 1
        assert self.jobsets[self.ev_js[last]].big
        self.queued = min(self.queued, self.ev_new[last])
        self.first_queued = self.total - self.queued + 1
        for js in self.jobsets:
            js.last_eval_id = 0
        for e in range(self.n_evals):
            self.jobsets[self.ev_js[e]].last_eval_id = e + 1

    # Which jobs get the new builds of each evaluation; random bits per build.
    def assign_builds(self):
        rng = self.rng
        self.job_of = array.array("i")
        self.bits = array.array("Q")
        getrandbits = rng.getrandbits
        for e in range(self.n_evals):
            js = self.jobsets[self.ev_js[e]]
            k = self.ev_new[e]
            aggregates = list(range(js.first_agg, js.n_jobs))
            if self.ev_seq[e] == 0:
                chosen = list(range(js.first_agg)) + aggregates
            else:
                plain = k - len(aggregates) - js.n_special
                chosen = (list(range(js.n_special)) + sorted(rng.sample(range(js.n_special, js.first_agg), plain)) +
                          aggregates)
            if e == self.n_evals - 1:
                # The queued builds are the last ones: not the aggregates,
                # whose constituents the queue runner would read too.
                chosen = aggregates + chosen[:len(chosen) - len(aggregates)]
            self.job_of.extend(chosen)
            self.bits.extend(getrandbits(64) for _ in range(k))
        assert len(self.job_of) == self.total

    def evals(self):
        """(eval id, jobset, timestamp, seq in its jobset, first new build, new builds)."""
        for e in range(self.n_evals):
            yield e + 1, self.jobsets[self.ev_js[e]], self.ev_ts[e], self.ev_seq[e], self.ev_first[e], self.ev_new[e]


# ---------------------------------------------------------------------------
# Pools that make per-build values cheap.

def pools(rng):
    status = []
    for code, weight in STATUS_WEIGHTS.items():
        status += [code] * weight
    status = (status + [0] * 1024)[:1024]
    rng.shuffle(status)
    durations = [max(1, min(72_000, int(rng.lognormvariate(4.8, 1.5)))) for _ in range(65536)]
    waits = [min(86_400, int(rng.expovariate(1 / 1800))) for _ in range(4096)]
    sizes = [max(200, min(4 << 30, int(rng.lognormvariate(14, 2.2)))) for _ in range(4096)]
    closure = [rng.randint(3, 60) for _ in range(256)]
    sha = ["".join(rng.choice("0123456789abcdef") for _ in range(64)) for _ in range(4096)]
    machines = {s: [f"ssh://nix@{s.split('-')[0].replace('_', '-')}-{'mac' if 'darwin' in s else 'builder'}-{i:02}"
                    for i in range(32)] for s in SYSTEMS4}
    deps = [f"{''.join(rng.choice(SYLLABLES) for _ in range(2))}-{rng.randrange(1, 9)}.{rng.randrange(0, 20)}"
            for _ in range(512)]
    return dict(status=status, durations=durations, waits=waits, sizes=sizes, closure=closure, sha=sha,
                machines=machines, deps=deps)


class Rows:
    """The rows of every table, made from the plan. Each table's method
    yields batches of tuples, in primary-key order where it has one."""

    def __init__(self, plan, queued_paths):
        self.p = plan
        self.h = plan.hashes.make()
        self.pool = pools(random.Random(plan.seed + 1))
        self.queued_paths = queued_paths  # build id -> (drv, [(name, path)])
        self.kept = set()
        self.constituents = []
        self.eval_errors = {}  # eval id -> [(job, message)]
        rng = random.Random(plan.seed + 2)
        for e, js, ts, seq, first, k in plan.evals():
            if rng.random() < 0.1:
                n = rng.randint(1, 5)
                self.eval_errors[e] = [(f"{rng.choice(js.o['sets']) or 'pkgs'}.broken{rng.randrange(1000)}."
                                        f"{js.o['systems'][0]}",
                                        f"error: attribute 'broken{rng.randrange(1000)}' missing\n\n"
                                        f"       at /nix/store/{self.h((1 << 38) + e * 8 + i)}-source/"
                                        f"pkgs/top-level/all-packages.nix:{rng.randrange(100, 40000)}:5:")
                                       for i in range(n)]

    # -- the members, which also decide constituents and what GC keeps --------

    def jobset_eval_members(self, sink):
        p = self.p
        cur = {js.index: [0] * js.n_jobs for js in p.jobsets}
        job_of = p.job_of
        for e, js, ts, seq, first, k in p.evals():
            c = cur[js.index]
            # Each new build with the build its job had in the evaluation
            # before, as the server records them (0: a job new then, NULL).
            NULL = "\\N"
            predecessor = {}
            for b in range(first, first + k):
                predecessor[b] = c[job_of[b - 1]]
                c[job_of[b - 1]] = b
            ids = sorted(c)
            n_old = len(ids) - k
            if sink.text_ok:
                pre = f"{e}\t"
                parts = []
                if n_old:
                    parts.append(pre + f"\tf\t\\N\n{pre}".join(map(str, ids[:n_old])) + "\tf\t\\N\n")
                parts.append("".join(f"{pre}{b}\tt\t{predecessor[b] or NULL}\n" for b in ids[n_old:]))
                sink.text("".join(parts), len(ids))
            else:
                sink.rows([(e, b, False, None) for b in ids[:n_old]] +
                          [(e, b, True, predecessor[b] or None) for b in ids[n_old:]])
            for agg, members in js.aggregate_jobs.items():
                a = c[agg]
                self.constituents.extend(sorted((a, c[m]) for m in members if c[m] != a))
            # What the GC roots keep: the newest keep_nr finished evaluations,
            # and the one with queued builds (the newest of the big jobset).
            if seq >= js.n_evals - js.o.get("keep_nr", 3) - (1 if js.big and p.queued else 0):
                self.kept.update(c)

    # -- builds ---------------------------------------------------------------

    def builds(self):
        p, h, pool = self.p, self.h, self.pool
        status_of, durations, waits, sizes, closure = (pool["status"], pool["durations"], pool["waits"],
                                                       pool["sizes"], pool["closure"])
        job_of, bits, kept, qpaths = p.job_of, p.bits, self.kept, self.queued_paths
        first_queued, stop_cap = p.first_queued, p.now - 60
        batch = []
        for e, js, ts, seq, first, k in p.evals():
            jobs, systems, desc, lic, home, maint = js.jobs, js.systems_of, js.desc, js.lic, js.home, js.maint
            jid, channel, first_agg = js.id, js.channel_job, js.first_agg
            for b in range(first, first + k):
                j = job_of[b - 1]
                r = bits[b - 1]
                nix_name = f"{js.pnames[j]}-{js.versions[j]}.{seq // 5}"
                if b >= first_queued:
                    drv = qpaths[b][0] if b in qpaths else f"/nix/store/{h(b * 8)}-{nix_name}.drv"
                    batch.append((b, False, ts, jid, jobs[j], nix_name, desc[j], drv, systems[j], lic[j], home[j],
                                  maint[j], j == channel, j >= first_agg, None, None, None, None, None, None, False,
                                  False))
                    continue
                status = status_of[r & 1023]
                cached = (status == 0 and ((r >> 10) & 15) < 3) or status == 8
                if cached:
                    start = stop = ts
                else:
                    start = ts + waits[(r >> 36) & 4095]
                    stop = start + durations[(r >> 20) & 0xFFFF]
                    if stop > stop_cap:
                        stop = stop_cap
                        start = min(start, stop)
                has_out = status == 0 or status == 6
                size = sizes[(r >> 48) & 4095] if has_out else None
                keep = r % 10007 == 0
                batch.append((b, True, ts, jid, jobs[j], nix_name, desc[j], f"/nix/store/{h(b * 8)}-{nix_name}.drv",
                              systems[j], lic[j], home[j], maint[j], j == channel, j >= first_agg, start, stop, cached,
                              status, size, size * closure[(r >> 40) & 255] if has_out else None, keep,
                              has_out and not keep and b not in kept))
                if len(batch) >= BATCH:
                    yield batch
                    batch = []
        yield batch

    def outputs_of(self, b, r, nix_name):
        if b in self.queued_paths:
            return self.queued_paths[b][1]
        n = OUTPUTS[(r >> 14) & 15]
        h = self.h
        out = [("out", f"/nix/store/{h(b * 8 + 1)}-{nix_name}")]
        if n > 1:
            out.append(("dev", f"/nix/store/{h(b * 8 + 2)}-{nix_name}-dev"))
        if n > 2:
            out.append(("doc", f"/nix/store/{h(b * 8 + 3)}-{nix_name}-doc"))
        return out

    def build_outputs(self):
        p = self.p
        job_of, bits, outputs_of = p.job_of, p.bits, self.outputs_of
        batch = []
        for e, js, ts, seq, first, k in p.evals():
            suffix = f".{seq // 5}"
            pnames, versions = js.pnames, js.versions
            for b in range(first, first + k):
                j = job_of[b - 1]
                for name, path in outputs_of(b, bits[b - 1], f"{pnames[j]}-{versions[j]}{suffix}"):
                    batch.append((b, name, path))
            if len(batch) >= BATCH:
                yield batch
                batch = []
        yield batch

    def steps_of(self, b, r, ts, js, j, nix_name, status):
        """(step_nr, type, drv, status, error, start, stop, machine, system, outputs) of a finished build."""
        pool, h = self.pool, self.h
        start = ts + pool["waits"][(r >> 36) & 4095]
        stop = min(start + pool["durations"][(r >> 20) & 0xFFFF], self.p.now - 60)
        start = min(start, stop)
        n = STEPS[(r >> 18) & 3]
        system = js.systems_of[j]
        machine = pool["machines"][system][(r >> 59) & 31]
        deps = pool["deps"]
        own_drv = f"/nix/store/{h(b * 8)}-{nix_name}.drv"
        steps = []
        if status == 2:
            n_deps, own = max(1, n - 1), False
        else:
            n_deps, own = n - 1, True
        total = n_deps + own
        span = (stop - start) / total
        for i in range(n_deps):
            dep = deps[(r >> (24 + 9 * i)) & 511]
            drv = f"/nix/store/{h(b * 8 + 4 + 2 * i)}-{dep}.drv"
            out = [("out", f"/nix/store/{h(b * 8 + 5 + 2 * i)}-{dep}")]
            failed = status == 2 and i == n_deps - 1
            error = f"builder for '{drv}' failed with exit code 2" if failed else None
            steps.append((i + 1, 0, drv, 1 if failed else 0, error, int(start + i * span), int(start + (i + 1) * span),
                          machine, system, out))
        if own:
            step_status = 1 if status == 8 else status
            error = None
            if status in (1, 6):
                error = f"builder for '{own_drv}' failed with exit code 1"
            elif status == 7:
                error = "timed out after 36000 seconds"
            elif status == 10:
                error = "log limit exceeded"
            steps.append((total, 0, own_drv, step_status, error, int(start + n_deps * span), stop, machine, system,
                          self.outputs_of(b, r, nix_name)))
        return steps

    def each_finished(self, with_cached=False):
        """(b, r, ts, js, j, nix_name, status) of every finished build not cached."""
        p = self.p
        job_of, bits, status_of, first_queued = p.job_of, p.bits, self.pool["status"], p.first_queued
        for e, js, ts, seq, first, k in p.evals():
            suffix = f".{seq // 5}"
            pnames, versions = js.pnames, js.versions
            for b in range(first, min(first + k, first_queued)):
                r = bits[b - 1]
                status = status_of[r & 1023]
                if not with_cached and ((status == 0 and ((r >> 10) & 15) < 3) or status == 8):
                    continue
                j = job_of[b - 1]
                yield b, r, ts, js, j, f"{pnames[j]}-{versions[j]}{suffix}", status

    def build_steps(self):
        batch = []
        for b, r, ts, js, j, nix_name, status in self.each_finished():
            for nr, kind, drv, st, error, start, stop, machine, system, _ in self.steps_of(b, r, ts, js, j, nix_name,
                                                                                           status):
                batch.append((b, nr, kind, drv, st, error, start, stop, machine, system))
            if len(batch) >= BATCH:
                yield batch
                batch = []
        yield batch

    def build_step_outputs(self):
        batch = []
        for b, r, ts, js, j, nix_name, status in self.each_finished():
            for step in self.steps_of(b, r, ts, js, j, nix_name, status):
                for name, path in sorted(step[9]):
                    batch.append((b, step[0], name, path))
            if len(batch) >= BATCH:
                yield batch
                batch = []
        yield batch

    def build_products(self):
        sha, sizes = self.pool["sha"], self.pool["sizes"]
        batch = []
        for b, r, ts, js, j, nix_name, status in self.each_finished(with_cached=True):
            if status != 0 and status != 6:
                continue
            outputs = self.outputs_of(b, r, nix_name)
            if j in js.file_jobs:
                kind = js.file_jobs[j]
                out = outputs[0][1]
                if kind == "manual":
                    rows = [("doc", "manual", None, None, f"{out}/share/doc/nixpkgs", "manual", "manual.html")]
                elif kind.startswith("iso"):
                    rows = [("file", "iso", sizes[(r >> 30) & 4095] * 20, sha[(r >> 40) & 4095],
                             f"{out}/iso/nixos-{nix_name}-x86_64-linux.iso", f"nixos-{nix_name}-x86_64-linux.iso", "")]
                else:
                    rows = [("file", "source-dist", sizes[(r >> 30) & 4095], sha[(r >> 40) & 4095],
                             f"{out}/tarballs/{nix_name}.tar.xz", f"{nix_name}.tar.xz", "")]
            elif j == js.channel_job:
                out = outputs[0][1]
                rows = [("channel", "-", None, None, out, nix_name, "")]
            elif (r >> 56) & 7 < 4:
                rows = [("nix-build", "" if name == "out" else name, None, None, path, path[44:], "")
                        for name, path in outputs]
            else:
                continue
            for nr, (kind, subtype, size, digest, path, name, default) in enumerate(rows, 1):
                batch.append((b, nr, kind, subtype, size, digest, path, name, default))
            if len(batch) >= BATCH:
                yield batch
                batch = []
        yield batch

    def build_metrics(self):
        project_names = {js.index: self.p.project_of(js)["name"] for js in self.p.jobsets}
        start = epoch(HISTORY_START)
        batch = []
        for b, r, ts, js, j, nix_name, status in self.each_finished(with_cached=True):
            metrics = js.metric_jobs.get(j)
            if not metrics or status != 0:
                continue
            years = (ts - start) / (365 * 86400)
            for k, (name, unit) in enumerate(metrics):
                base = [60_000, 45.0, 2_500_000, 30.0, 4_000_000, 900_000_000][k]
                noise = 1 + (((r >> (8 * k)) & 255) - 128) / 2560
                value = base * (1 + 0.12 * years) * noise
                if unit == "":
                    value = float(int(value))
                batch.append((b, name, unit, value, project_names[js.index], js.name, js.jobs[j], ts))
        yield batch

    def failed_paths(self):
        batch = []
        for b, r, ts, js, j, nix_name, status in self.each_finished():
            if status in (1, 2, 6):
                steps = self.steps_of(b, r, ts, js, j, nix_name, status)
                failing = steps[-1]
                batch.append((failing[2], failing[6]))
            if len(batch) >= BATCH:
                yield batch
                batch = []
        yield batch

    def cache_paths(self):
        batch = []
        for b, r, ts, js, j, nix_name, status in self.each_finished(with_cached=True):
            if status == 0 or status == 6:
                for name, path in self.outputs_of(b, r, nix_name):
                    batch.append((path[11:43], path))
            if len(batch) >= BATCH:
                yield batch
                batch = []
        yield batch

    # -- the small tables ----------------------------------------------------

    def projects(self):
        yield [(p["id"], p["name"], p["display"], p["description"], p["homepage"], "", True, False, False)
               for p in self.p.projects]

    def jobset_inputs(self):
        rows = []
        n = 0
        for js in self.p.jobsets:
            if "flake" in js.o:
                continue
            name = js.o["input"]
            repo = f"https://github.com/{self.p.project_of(js)['name']}/{name}.git"
            branch = "master" if not js.name.startswith("release") else js.name
            for iname, kind, value in [(name, "git", f"{repo} {branch}"), ("officialRelease", "boolean", "false"),
                                       ("supportedSystems", "nix",
                                        "[ " + " ".join(f'"{s}"' for s in js.o["systems"]) + " ]")]:
                n += 1
                rows.append((n, js.id, iname, kind, value, iname == name and js.big))
        yield rows

    def jobsets(self):
        rows = []
        for js in self.p.jobsets:
            o = js.o
            last = js.last_eval_id
            errors = self.eval_errors.get(last)
            error_msg = "".join(f"in job ‘{job}’:\n{message}\n\n" for job, message in errors) if errors else None
            last_time = self.p.ev_ts[last - 1]
            enabled = o.get("enabled", 1)
            flake = o.get("flake")
            rows.append((js.id, js.project_index + 1, js.name, f"{js.name} of {self.p.project_of(js)['display']}",
                         "" if flake else o["input"], "" if flake else o["path"], error_msg,
                         last_time if errors else None, last_time + 30, "evaluated", None, False, enabled, False,
                         False, "", o.get("keep_nr", 3), 0, o.get("shares", 100),
                         "fetching input ‘src’: git ls-remote exited with status 128: remote: Repository not found."
                         if o.get("fetch_error") else None,
                         None, 1 if flake else 0, flake, False, None, None))
        yield rows

    def jobset_evals(self):
        rng = random.Random(self.p.seed + 3)
        batch = []
        previous = {}
        for e, js, ts, seq, first, k in self.p.evals():
            flake = js.o.get("flake")
            locked = f"{flake}/{rng.getrandbits(160):040x}" if flake else None
            eval_time = rng.randint(400, 1500) if js.big else rng.randint(3, 120)
            batch.append((e, js.id, ts, rng.randint(1, 60), eval_time, True, f"{rng.getrandbits(256):064x}",
                          js.n_jobs, len(self.eval_errors.get(e, ())), locked, previous.get(js.index)))
            previous[js.index] = e
            if len(batch) >= BATCH:
                yield batch
                batch = []
        yield batch

    def jobset_eval_inputs(self):
        rng = random.Random(self.p.seed + 4)
        batch = []
        n = 0
        for e, js, ts, seq, first, k in self.p.evals():
            if "flake" in js.o:
                continue
            name = js.o["input"]
            repo = f"https://github.com/{self.p.project_of(js)['name']}/{name}.git"
            branch = "master" if not js.name.startswith("release") else js.name
            systems = "[ " + " ".join(f'"{s}"' for s in js.o["systems"]) + " ]"
            for iname, kind, uri, rev, value, path in [
                    (name, "git", repo, f"{rng.getrandbits(160):040x}", f"{repo} {branch}",
                     f"/nix/store/{self.h((1 << 38) + e * 8 + 7)}-source"),
                    ("officialRelease", "boolean", None, None, "false", None),
                    ("supportedSystems", "nix", None, None, systems, None)]:
                n += 1
                batch.append((n, e, iname, kind, uri, rev, value, None, path, None))
            if len(batch) >= BATCH:
                yield batch
                batch = []
        yield batch

    def evaluation_errors(self):
        rows = []
        n = 0
        for e, js, ts, seq, first, k in self.p.evals():
            for job, message in self.eval_errors.get(e, ()):
                n += 1
                rows.append((n, js.id, e, job, message, ts))
        yield rows

    def aggregate_constituents(self):
        yield self.constituents


OUTPUTS = [1] * 9 + [2] * 4 + [3] * 3
STEPS = [1, 1, 2, 3]

COLUMNS = {
    "projects": "id name display_name description homepage owner enabled hidden enable_dynamic_run_command",
    "jobsets": "id project_id name description nixexpr_input nixexpr_path error_msg error_time last_checked_time "
               "last_check_outcome trigger_time force_eval enabled enable_email hidden email_override keep_nr "
               "check_interval scheduling_shares fetch_error_msg start_time type flake enable_dynamic_run_command "
               "eval_evaluated eval_total",
    "jobset_inputs": "id jobset_id name type value email_responsible",
    "jobset_evals": "id jobset_id timestamp checkout_time eval_time has_new_builds hash nr_builds nr_errors flake "
                    "previous_eval_id",
    "jobset_eval_inputs": "id eval_id name type uri revision value dependency path sha256_hash",
    "jobset_eval_members": "eval_id build_id is_new previous_build_id",
    # Left to their defaults: max_silent, timeout, priority, global_priority,
    # release_name, output_errors (fewer fields to format).
    "builds": "id finished timestamp jobset_id job nix_name description drv_path system license homepage "
              "maintainers is_channel is_aggregate start_time stop_time is_cached_build build_status size "
              "closure_size keep outputs_collected",
    "build_outputs": "build_id name path",
    # busy (false), propagated_from and times_built (NULL) left to their defaults.
    "build_steps": "build_id step_nr type drv_path status error_msg start_time stop_time machine system",
    "build_step_outputs": "build_id step_nr name path",
    "build_products": "build_id product_nr type subtype file_size sha256_hash path name default_path",
    "build_metrics": "build_id name unit value project jobset job timestamp",
    "aggregate_constituents": "aggregate_id constituent_id",
    "failed_paths": "path time",
    "evaluation_errors": "id jobset_id eval_id job message time",
    "cache_paths": "hash_part path",
}
COLUMNS = {t: c.split() for t, c in COLUMNS.items()}
# Tables whose values never hold a tab, newline or backslash: formatted with
# one `%` per row (None and booleans fixed up afterwards).
FAST = {"builds", "build_outputs", "build_steps", "build_step_outputs", "build_products", "build_metrics",
        "aggregate_constituents", "failed_paths", "cache_paths", "jobset_evals", "jobset_eval_inputs"}
# The other tables, biggest first (loaded `jobs` at a time on PostgreSQL).
LOAD_ORDER = ["build_steps", "builds", "build_step_outputs", "build_outputs", "cache_paths", "build_products",
              "failed_paths", "build_metrics", "aggregate_constituents", "evaluation_errors", "projects", "jobsets",
              "jobset_inputs", "jobset_evals", "jobset_eval_inputs", "jobset_eval_members"]
# The order of loading: members first (they decide what GC keeps and the
# aggregates' constituents).
ORDER = ["projects", "jobsets", "jobset_inputs", "jobset_evals", "jobset_eval_inputs", "jobset_eval_members",
         "builds", "build_outputs", "build_steps", "build_step_outputs", "build_products", "build_metrics",
         "aggregate_constituents", "failed_paths", "evaluation_errors", "cache_paths"]


# ---------------------------------------------------------------------------
# Databases.

def is_postgres(target):
    return target.startswith("postgres://") or target.startswith("postgresql://")


def pg_escape(value):
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


class Progress:
    def __init__(self, table):
        self.table, self.rows, self.started = table, 0, time.monotonic()
        self.last = self.started

    def add(self, n):
        self.rows += n
        now = time.monotonic()
        if now - self.last >= 10:
            self.last = now
            say(f"    {self.table}: {self.rows:,} rows, {self.rows / (now - self.started):,.0f} rows/s")

    def done(self):
        took = time.monotonic() - self.started
        say(f"  {self.table:24} {self.rows:>12,} rows {took:8.1f} s {self.rows / max(took, 1e-9):>12,.0f} rows/s")
        return took


class Postgres:
    def __init__(self, url):
        self.url = url
        parts = urllib.parse.urlsplit(url)
        self.name = parts.path.lstrip("/")
        if not self.name:
            raise SystemExit(f"{url}: the URL must name the database to create")
        self.admin_url = urllib.parse.urlunsplit(parts._replace(path="/postgres"))

    def psql(self, sql, url=None, check=True):
        result = subprocess.run(["psql", url or self.url, "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                                 "-c", sql], capture_output=True, text=True, env=PSQL_ENV)
        if check and result.returncode != 0:
            raise SystemExit(f"psql failed: {sql[:200]}\n{result.stderr}")
        return result.stdout

    def query(self, sql):
        return [line.split("\t") for line in self.psql(sql).splitlines() if line]

    def exists(self):
        return self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.name}'", self.admin_url).strip() == "1"

    def create(self):
        self.psql(f'CREATE DATABASE "{self.name}"', self.admin_url)

    def drop(self):
        self.psql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)', self.admin_url)

    def config(self, data_dir):
        return f'data_dir = "{data_dir}"\ndatabase_url = "{self.url}"\n'

    def columns(self):
        """table -> {column: (not null, has default)}"""
        out = {}
        for table, column, nullable, default, identity in self.query(
                "SELECT table_name, column_name, is_nullable, coalesce(column_default, ''), is_identity "
                "FROM information_schema.columns WHERE table_schema = 'public'"):
            out.setdefault(table, {})[column] = (nullable == "NO", bool(default) or identity == "YES")
        return out

    def prepare(self, tables):
        listed = ",".join(f"'{t}'" for t in tables)
        self.fks = self.query("SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                              "WHERE contype = 'f' AND connamespace = 'public'::regnamespace")
        self.indexes = self.query(
            "SELECT indexname, indexdef FROM pg_indexes i WHERE schemaname = 'public' AND tablename IN (" + listed +
            ") AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = "
            "(quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))::regclass)")
        sql = [f'ALTER TABLE {t} DROP CONSTRAINT "{name}";' for t, name, _ in self.fks]
        sql += [f'DROP INDEX "{name}";' for name, _ in self.indexes]
        # The evaluation counts' triggers: their work is done once at the end.
        self.triggered = [t for t in ("builds", "jobset_eval_members") if t in tables]
        sql += [f"ALTER TABLE {t} DISABLE TRIGGER USER;" for t in self.triggered]
        self.psql("\n".join(sql))
        say(f"  dropped {len(self.fks)} foreign keys and {len(self.indexes)} indexes")

    def load(self, table, columns, batches, fast):
        process = subprocess.Popen(
            ["psql", self.url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-c", f"TRUNCATE {table}",
             "-c", f"COPY {table} ({', '.join(columns)}) FROM STDIN (FREEZE)"], stdin=subprocess.PIPE, env=PSQL_ENV)
        progress = Progress(table)
        write = process.stdin.write
        sink = Sink(self, write, progress)
        fmt = "\t".join(["%s"] * len(columns)) + "\n"
        try:
            for batch in batches(sink) if callable(batches) else batches:
                if not batch:
                    continue
                if fast:
                    text = "".join([fmt % row for row in batch])
                    text = text.replace("\tNone", "\t\\N")  # PostgreSQL reads True and False
                else:
                    text = "".join("\t".join(map(pg_escape, row)) + "\n" for row in batch)
                write(text.encode())
                progress.add(len(batch))
            process.stdin.close()
        except BrokenPipeError:
            pass
        if process.wait() != 0:
            raise SystemExit(f"COPY {table} failed")
        return progress

    def finish(self):
        timings = {}
        for name, definition in self.indexes:
            started = time.monotonic()
            self.psql(f"SET maintenance_work_mem = '1GB'; {definition}")
            timings[name] = time.monotonic() - started
            say(f"  index {name:40} {timings[name]:7.1f} s")
        for table, name, definition in self.fks:
            started = time.monotonic()
            self.psql(f'SET maintenance_work_mem = \'1GB\'; ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
            timings[name] = time.monotonic() - started
            if timings[name] > 1:
                say(f"  foreign key {name:34} {timings[name]:7.1f} s (validated)")
        say(f"  {len(self.fks)} foreign keys added back and validated")
        self.psql("\n".join(f"ALTER TABLE {t} ENABLE TRIGGER USER;" for t in self.triggered))
        started = time.monotonic()
        self.psql(RECOUNT_EVALS)
        say(f"  evaluation counts {time.monotonic() - started:7.1f} s")
        started = time.monotonic()
        self.psql(OUTCOME_CHANGES)
        say(f"  changed outcomes {time.monotonic() - started:7.1f} s")
        # The jobsets' job names, as migration 17 fills them (its trigger
        # on builds was off during the load).
        self.psql("INSERT INTO jobset_jobs (jobset_id, name) SELECT DISTINCT jobset_id, job FROM builds "
                  "ON CONFLICT DO NOTHING")
        identity = self.query("SELECT table_name, column_name FROM information_schema.columns "
                              "WHERE table_schema = 'public' AND is_identity = 'YES'")
        self.psql("\n".join(f"SELECT setval(pg_get_serial_sequence('{t}', '{c}'), GREATEST(max({c}), 1), "
                            f"max({c}) IS NOT NULL) FROM {t};" for t, c in identity))
        started = time.monotonic()
        self.psql("VACUUM (ANALYZE)")
        say(f"  VACUUM (ANALYZE) {time.monotonic() - started:.1f} s")
        return timings

    def size(self):
        return int(self.psql(f"SELECT pg_database_size('{self.name}')").strip())

    def table_sizes(self):
        return {t: int(s) for t, s in self.query(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relkind = 'r' "
            "AND relnamespace = 'public'::regnamespace")}


# Each evaluation's counts of finished and succeeded builds, as migration 13
# computes them (its triggers keep them from then on; they are off during a
# load).
RECOUNT_EVALS = (
    "UPDATE jobset_evals SET "
    "nr_finished = (SELECT count(*) FROM jobset_eval_members m JOIN builds b ON b.id = m.build_id "
    "WHERE m.eval_id = jobset_evals.id AND b.finished = TRUE), "
    "nr_succeeded = (SELECT count(*) FROM jobset_eval_members m JOIN builds b ON b.id = m.build_id "
    "WHERE m.eval_id = jobset_evals.id AND b.finished = TRUE AND b.build_status = 0)")

# Whether each new member's build and its predecessor both finished with
# different outcomes, as migration 16 computes it (its triggers keep it from
# then on).
OUTCOME_CHANGES = (
    "UPDATE jobset_eval_members SET outcome_changed = TRUE WHERE is_new AND previous_build_id IS NOT NULL "
    "AND EXISTS (SELECT 1 FROM builds b, builds p WHERE b.id = jobset_eval_members.build_id "
    "AND p.id = jobset_eval_members.previous_build_id AND b.finished = TRUE AND p.finished = TRUE "
    "AND (coalesce(b.build_status, -1) = 0) <> (coalesce(p.build_status, -1) = 0))")


class Sqlite:
    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.name = self.path
        self.url = "sqlite://" + self.path

    def connect(self):
        return sqlite3.connect(self.path, isolation_level=None)

    def query(self, sql):
        db = self.connect()
        try:
            return [tuple("" if v is None else str(v) for v in row) for row in db.execute(sql)]
        finally:
            db.close()

    def exists(self):
        return os.path.exists(self.path)

    def create(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)

    def drop(self):
        for suffix in ["", "-wal", "-shm", "-journal"]:
            if os.path.exists(self.path + suffix):
                os.remove(self.path + suffix)

    def config(self, data_dir):
        return f'data_dir = "{data_dir}"\ndatabase_url = "{self.url}"\n'

    def columns(self):
        db = self.connect()
        out = {}
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for _, column, _, notnull, default, pk in db.execute(f"PRAGMA table_info({table})"):
                # An INTEGER PRIMARY KEY is the rowid: given when omitted.
                out.setdefault(table, {})[column] = (bool(notnull), default is not None or pk == 1)
        db.close()
        return out

    def prepare(self, tables):
        self.db = self.connect()
        self.db.execute("PRAGMA journal_mode = OFF")
        self.db.execute("PRAGMA synchronous = OFF")
        self.db.execute("PRAGMA foreign_keys = OFF")
        self.db.execute("PRAGMA cache_size = -1000000")
        self.db.execute("PRAGMA temp_store = MEMORY")
        listed = ",".join(f"'{t}'" for t in tables)
        self.indexes = self.db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                                       f"AND tbl_name IN ({listed})").fetchall()
        for name, _ in self.indexes:
            self.db.execute(f'DROP INDEX "{name}"')
        # Triggers would run once per row loaded, each a lookup in an index
        # just dropped: off, and their work done once at the end. (The
        # search rows and the job names are the server's to write: it
        # writes those of every build after its cursor when it starts.)
        self.triggers = self.db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
        for name, _ in self.triggers:
            self.db.execute(f'DROP TRIGGER "{name}"')
        say(f"  dropped {len(self.indexes)} indexes and {len(self.triggers)} triggers")

    def load(self, table, columns, batches, fast):
        progress = Progress(table)
        sink = Sink(self, None, progress)
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        db = self.db
        db.execute("BEGIN")
        db.execute(f"DELETE FROM {table}")
        sink.sql = sql
        for batch in batches(sink) if callable(batches) else batches:
            if batch:
                db.executemany(sql, batch)
                progress.add(len(batch))
        db.execute("COMMIT")
        return progress

    def finish(self):
        timings = {}
        db = self.db
        for name, sql in self.indexes:
            started = time.monotonic()
            db.execute(sql)
            timings[name] = time.monotonic() - started
            say(f"  index {name:40} {timings[name]:7.1f} s")
        for name, sql in self.triggers:
            db.execute(sql)
        started = time.monotonic()
        db.execute(RECOUNT_EVALS)
        say(f"  evaluation counts {time.monotonic() - started:7.1f} s")
        started = time.monotonic()
        db.execute(OUTCOME_CHANGES)
        say(f"  changed outcomes {time.monotonic() - started:7.1f} s")
        started = time.monotonic()
        problems = db.execute("PRAGMA foreign_key_check").fetchmany(10)
        if problems:
            raise SystemExit(f"foreign keys broken: {problems}")
        say(f"  foreign_key_check: none broken ({time.monotonic() - started:.1f} s)")
        started = time.monotonic()
        db.execute("ANALYZE")
        say(f"  ANALYZE {time.monotonic() - started:.1f} s")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        db.close()
        if mode != "wal":
            raise SystemExit(f"journal_mode is {mode}, not wal")
        return timings

    def size(self):
        return sum(os.path.getsize(self.path + s) for s in ["", "-wal"] if os.path.exists(self.path + s))

    def table_sizes(self):
        try:
            return {name: int(size) for name, size in self.query(
                "SELECT m.tbl_name, sum(s.pgsize) FROM dbstat s JOIN sqlite_master m ON m.name = s.name "
                "GROUP BY m.tbl_name")}
        except sqlite3.DatabaseError:
            return {}


class Sink:
    """Where a table's rows go: tuples, or (PostgreSQL) ready COPY text."""

    def __init__(self, target, write, progress):
        self.target, self.write, self.progress = target, write, progress
        self.text_ok = write is not None

    def text(self, text, n):
        self.write(text.encode())
        self.progress.add(n)

    def rows(self, rows):
        if self.write is not None:
            self.write("".join("\t".join(map(pg_escape, row)) + "\n" for row in rows).encode())
        else:
            self.target.db.executemany(self.sql, rows)
        self.progress.add(len(rows))


def open_target(target):
    return Postgres(target) if is_postgres(target) else Sqlite(target)


def migrate(db, binary):
    work = tempfile.mkdtemp(prefix="orthrus-history-")
    try:
        config = os.path.join(work, "orthrus.toml")
        with open(config, "w") as f:
            f.write(db.config(os.path.join(work, "data")))
        result = subprocess.run([binary, "migrate", "--config", config], capture_output=True, text=True,
                                env=dict(os.environ, RUST_LOG="warn"))
        if result.returncode != 0:
            raise SystemExit(f"orthrus migrate failed:\n{result.stdout}{result.stderr}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_schema(db):
    """Every column written exists; every NOT NULL column without default is written."""
    schema = db.columns()
    for table in TABLES:
        if table not in schema:
            raise SystemExit(f"the schema has no table {table}")
        have = schema[table]
        written = set(COLUMNS[table])
        missing = written - set(have)
        if missing:
            raise SystemExit(f"{table}: the schema has no column {', '.join(sorted(missing))}")
        required = {c for c, (notnull, default) in have.items() if notnull and not default}
        if required - written:
            raise SystemExit(f"{table}: NOT NULL columns without default not written: {sorted(required - written)}")
        left = set(have) - written
        if left:
            say(f"  note: {table}: columns left to their default: {', '.join(sorted(left))}")


# ---------------------------------------------------------------------------
# Queued builds: real derivations in the local store.

def instantiate_queued(plan, salt):
    """Derivations for the queued builds (trivial, never built: the
    server's queue runner reads them and keeps the builds queued); returns
    build id -> (drv, [(output, path)]), or {} without Nix."""
    if not shutil.which("nix-instantiate") or plan.queued == 0:
        if plan.queued:
            say("  warning: no nix-instantiate: queued builds get made-up derivations, which a server fails at once")
        return {}
    specs = []
    ids = list(range(plan.first_queued, plan.total + 1))
    last = plan.n_evals - 1
    js = plan.jobsets[plan.ev_js[last]]
    seq = plan.ev_seq[last]
    for b in ids:
        j = plan.job_of[b - 1]
        n = OUTPUTS[(plan.bits[b - 1] >> 14) & 15]
        specs.append((f"{js.pnames[j]}-{js.versions[j]}.{seq // 5}", js.systems_of[j], ["out", "dev", "doc"][:n]))
    expression = ("{ salt, specs }: map (s: derivation { name = s.name; system = s.system; builder = \"/bin/sh\";"
                  " args = [ \"-c\" \"exit 1\" ]; outputs = s.outputs; inherit salt; }) specs")
    work = tempfile.mkdtemp(prefix="orthrus-history-nix-")
    try:
        with open(os.path.join(work, "queued.nix"), "w") as f:
            f.write(expression)
        nix_specs = "[ " + " ".join(
            f'{{ name = "{name}"; system = "{system}"; outputs = [ {" ".join(json.dumps(o) for o in outs)} ]; }}'
            for name, system, outs in specs) + " ]"
        with open(os.path.join(work, "specs.nix"), "w") as f:
            f.write(nix_specs)
        env = dict(os.environ)
        env.setdefault("NIX_CONFIG", NIX_CONFIG)
        args = ["--argstr", "salt", salt, "--arg", "specs", f"import {work}/specs.nix"]
        drvs = subprocess.run(["nix-instantiate", os.path.join(work, "queued.nix"), *args], env=env, check=True,
                              capture_output=True, text=True).stdout.split()
        outputs = json.loads(subprocess.run(
            ["nix-instantiate", "--eval", "--strict", "--json", "-E",
             f"map (d: map (o: {{ name = o; path = d.${{o}}.outPath; }}) d.outputs) (import {work}/queued.nix "
             f"{{ salt = \"{salt}\"; specs = import {work}/specs.nix; }})"],
            env=env, check=True, capture_output=True, text=True).stdout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert len(drvs) == len(ids) == len(outputs)
    return {b: (drv, [(o["name"], o["path"]) for o in outs]) for b, drv, outs in zip(ids, drvs, outputs)}


def delete_queued_drvs(db):
    """Deletes the derivations instantiate_queued() made for this database
    (the newest evaluation's new builds, queued or since finished by a
    server; only files that name this database in their salt)."""
    try:
        drvs = [row[0] for row in db.query(
            "SELECT b.drv_path FROM jobset_eval_members m JOIN builds b ON b.id = m.build_id "
            "WHERE m.eval_id = (SELECT max(id) FROM jobset_evals) AND m.is_new")]
    except (SystemExit, sqlite3.Error):
        return
    mine = []
    for drv in drvs:
        try:
            with open(drv, "rb") as f:
                if db.name.encode() in f.read():
                    mine.append(drv)
        except OSError:
            pass
    if mine and shutil.which("nix-store"):
        env = dict(os.environ)
        env.setdefault("NIX_CONFIG", NIX_CONFIG)
        for i in range(0, len(mine), 5000):
            subprocess.run(["nix-store", "--delete", *mine[i:i + 5000]], env=env, capture_output=True)
        say(f"  deleted {len(mine)} queued derivations")


# ---------------------------------------------------------------------------

def run_forked(tables, work, jobs):
    """Runs work(table) for every table, `jobs` child processes at a time;
    returns table -> what work returned (JSON-able)."""
    results, running, waiting = {}, {}, list(tables)
    while waiting or running:
        while waiting and len(running) < jobs:
            table = waiting.pop(0)
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read)
                code = 1
                try:
                    os.write(write, json.dumps(work(table)).encode())
                    code = 0
                except BaseException:
                    import traceback
                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    os._exit(code)
            os.close(write)
            running[pid] = (table, read)
        pid, status = os.wait()
        table, read = running.pop(pid)
        data = b""
        while chunk := os.read(read, 65536):
            data += chunk
        os.close(read)
        if status != 0:
            for other in running:
                os.kill(other, 15)
            raise SystemExit(f"loading {table} failed")
        results[table] = json.loads(data)
    return results


def generate(target, builds, queued=1000, seed=1, binary=BINARY, replace=False, big_jobs=None, jobs=1):
    """Makes the database `target` (a postgres:// URL or an SQLite path) with
    a history of `builds` builds; returns a summary (rows, sizes, times)."""
    db = open_target(target)
    started = time.monotonic()
    if db.exists():
        if not replace:
            raise SystemExit(f"{db.name} exists: --replace to make it again, --drop to remove it")
        delete_queued_drvs(db)
        db.drop()
    say(f"history: {builds:,} builds into {db.name}")
    db.create()
    migrate(db, binary)
    check_schema(db)
    t = time.monotonic()
    plan = Plan(builds, queued, seed, big_jobs=big_jobs)
    big = next(j for j in plan.jobsets if j.big)
    say(f"  plan: {plan.total:,} builds, {plan.n_evals:,} evaluations, {len(plan.jobsets)} jobsets; "
        f"{big.name} has {big.n_jobs:,} jobs and {big.n_evals} evaluations; {plan.queued:,} queued "
        f"({time.monotonic() - t:.1f} s)")
    t = time.monotonic()
    queued_paths = instantiate_queued(plan, f"{db.name}-{seed}")
    if queued_paths:
        say(f"  {len(queued_paths):,} queued derivations instantiated ({time.monotonic() - t:.1f} s)")
    rows = Rows(plan, queued_paths)
    db.prepare(TABLES)
    counts, times = {}, {}
    load_started = time.monotonic()

    def load(table):
        source = getattr(rows, table)
        if table == "jobset_eval_members":
            def batches(sink):
                source(sink)
                return []
            progress = db.load(table, COLUMNS[table], batches, True)
        else:
            progress = db.load(table, COLUMNS[table], source(), table in FAST)
        return progress.rows, progress.done()

    # The members first: they decide what the GC roots keep (outputs_collected
    # of builds) and the aggregates' constituents. Then, on PostgreSQL, `jobs`
    # tables at a time, each in a process of its own (forked: the plan is
    # shared), the biggest first.
    first = ORDER[:ORDER.index("jobset_eval_members") + 1]
    for table in first:
        counts[table], times[table] = load(table)
    rest = sorted((t for t in ORDER if t not in first), key=LOAD_ORDER.index)
    if jobs > 1 and isinstance(db, Postgres):
        for table, (n, took) in run_forked(rest, load, jobs).items():
            counts[table], times[table] = n, took
    else:
        for table in rest:
            counts[table], times[table] = load(table)
    load_time = time.monotonic() - load_started
    t = time.monotonic()
    db.finish()
    index_time = time.monotonic() - t
    total_time = time.monotonic() - started
    size = db.size()
    table_sizes = db.table_sizes()
    total_rows = sum(counts.values())
    say(f"\n{'table':24} {'rows':>12} {'rows/s':>12} {'MiB':>9}  (MiB: the table with its indexes)")
    for table in ORDER:
        rate = counts[table] / max(times[table], 1e-9)
        mib = table_sizes.get(table, 0) / 2 ** 20
        say(f"{table:24} {counts[table]:>12,} {rate:>12,.0f} {mib:>9.1f}")
    say(f"{'all':24} {total_rows:>12,} {total_rows / load_time:>12,.0f}")
    say(f"\nloaded in {load_time:.0f} s, indexes/keys/analyze {index_time:.0f} s, {total_time:.0f} s in all; "
        f"database {size / 2 ** 30:.2f} GiB, {size / plan.total:.0f} bytes per build")
    return dict(target=target, builds=plan.total, evals=plan.n_evals, rows=counts, times=times,
                load_seconds=load_time, index_seconds=index_time, total_seconds=total_time, size=size,
                bytes_per_build=size / plan.total)


def drop(target):
    """Removes what generate() made: the database or the SQLite files, and
    the queued builds' derivations."""
    db = open_target(target)
    if db.exists():
        delete_queued_drvs(db)
        db.drop()
        say(f"dropped {db.name}")


def facts(target):
    """What bench/scale.py asks for: names and ids in the history."""
    db = open_target(target)
    q = db.query

    def one(sql):
        rows = q(sql)
        return rows[0] if rows else None

    project, jobset = "nixpkgs", "trunk"
    jobset_id = int(one("SELECT j.id FROM jobsets j JOIN projects p ON p.id = j.project_id "
                        f"WHERE p.name = '{project}' AND j.name = '{jobset}'")[0])
    evals = q(f"SELECT id, nr_builds FROM jobset_evals WHERE jobset_id = {jobset_id} ORDER BY id DESC LIMIT 2")
    # A package's new build in the newest evaluation with nothing queued:
    # both `latest` and `latest-finished` of its job answer.
    unfinished = int(one("SELECT count(*) FROM jobset_eval_members m JOIN builds b ON b.id = m.build_id "
                         f"WHERE m.eval_id = {evals[0][0]} AND NOT b.finished")[0])
    finished_eval = evals[1 if unfinished and len(evals) > 1 else 0][0]
    build_id, job, drv = one("SELECT b.id, b.job, b.drv_path FROM jobset_eval_members m JOIN builds b "
                             f"ON b.id = m.build_id WHERE m.eval_id = {finished_eval} AND m.is_new "
                             "AND b.build_status = 0 AND NOT b.outputs_collected AND NOT b.is_aggregate "
                             "AND b.job LIKE '%.%' ORDER BY b.id DESC LIMIT 1")
    out = one(f"SELECT path FROM build_outputs WHERE build_id = {build_id} AND name = 'out'")[0]
    eval_id, eval_size = int(evals[0][0]), int(evals[0][1])
    substring_job = one(f"SELECT job FROM builds WHERE jobset_id = {jobset_id} AND job LIKE "
                        "'python311Packages.numpy.%' ORDER BY id DESC LIMIT 1")
    substring_job = substring_job[0] if substring_job else job
    newest_of = one(f"SELECT max(id) FROM builds WHERE jobset_id = {jobset_id} AND job = '{substring_job}'")[0]
    word_build = one("SELECT max(id) FROM builds WHERE job LIKE '%numpy%'")[0]
    queued = int(one("SELECT count(*) FROM builds WHERE NOT finished")[0])
    total = int(one("SELECT max(id) FROM builds")[0])
    return dict(project=project, jobset=jobset, jobset_id=jobset_id, build=int(build_id), job=job, drv=drv, out=out,
                eval=eval_id, eval_size=eval_size, metrics_job="metrics",
                substring="python311Packages.numpy", substring_build=int(newest_of), word="numpy",
                word_build=int(word_build or 0), out_prefix=out[11:19], drv_prefix=drv[11:19], queued=queued,
                builds=total, target=target)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builds", type=int, default=100_000)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--postgres", metavar="URL", help="postgres://user@host:port/NEW_DATABASE")
    where.add_argument("--sqlite", metavar="PATH", help="the SQLite file to make")
    parser.add_argument("--queued", type=int, default=1000, help="unfinished builds in the newest evaluation")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--big-jobs", type=int, help="jobs of nixpkgs:trunk (default: up to 100,000)")
    parser.add_argument("--replace", action="store_true", help="drop the database first if it exists")
    parser.add_argument("--jobs", type=int, default=1,
                        help="tables loaded at once on PostgreSQL, each by a process of its own "
                             "(for more than 2 CPUs: on 2 it is slower)")
    parser.add_argument("--drop", action="store_true", help="only remove the database (and its derivations)")
    parser.add_argument("--binary", default=BINARY)
    args = parser.parse_args()
    target = (args.postgres or args.sqlite
              or os.path.join(tempfile.gettempdir(), f"orthrus-history-{args.builds}.sqlite"))
    if args.drop:
        drop(target)
        return
    if args.builds < 10_000:
        sys.exit("--builds: at least 10,000")
    generate(target, args.builds, queued=args.queued, seed=args.seed, binary=args.binary, replace=args.replace,
             big_jobs=args.big_jobs, jobs=args.jobs)


if __name__ == "__main__":
    main()
