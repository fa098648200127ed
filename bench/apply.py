#!/usr/bin/env python3
"""`orthrus project apply` on a file of many projects and jobsets: the first
run creates them all, the second finds nothing to change. Both are set
against the floor of any run: `orthrus plugin list`, which starts the
binary, opens the database and loads the plugins (from their compiled
cache, warmed first) as apply does, and does nothing else.

    python3 bench/apply.py [--projects 100] [--jobsets 10] [--binary PATH]

Each jobset has a git input, checked by the git plugin as the server would,
and a string input. The database is SQLite in a temporary directory."""

import argparse
import os
import subprocess
import tempfile
import time

from orthrus_bench import BINARY, nix_env


def timed(command, env):
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
    return elapsed, result.stdout


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=100)
    parser.add_argument("--jobsets", type=int, default=10)
    parser.add_argument("--binary", default=BINARY)
    args = parser.parse_args()
    env = nix_env()
    with tempfile.TemporaryDirectory(prefix="orthrus-apply-") as work:
        config = os.path.join(work, "orthrus.toml")
        with open(config, "w") as f:
            f.write(f'data_dir = "{work}/data"\n')
        lines = []
        for p in range(args.projects):
            lines.append(f'[projects.p{p}]\ndisplayname = "Project {p}"\n')
            for j in range(args.jobsets):
                lines.append(
                    f"[projects.p{p}.jobsets.j{j}]\nnixexprinput = \"src\"\nnixexprpath = \"release.nix\"\n"
                    f"checkinterval = 0\nenabled = 0\n"
                    f'inputs.src = {{ type = "git", value = "https://example.org/p{p}.git main" }}\n'
                    f'inputs.flavour = {{ type = "string", value = "j{j}" }}\n'
                )
        projects = os.path.join(work, "projects.toml")
        with open(projects, "w") as f:
            f.write("\n".join(lines))
        base = [args.binary, "--config", config]
        timed(base + ["migrate"], env)
        timed(base + ["plugin", "list"], env)  # compiles the plugins once
        floor, _ = timed(base + ["plugin", "list"], env)
        first, out = timed(base + ["project", "apply", projects], env)
        created = out.count("created jobset")
        second, out = timed(base + ["project", "apply", projects], env)
        assert out.startswith("nothing to change"), out
        total = args.projects * args.jobsets
        print(f"{args.projects} projects, {total} jobsets ({args.binary})")
        print(f"  floor (orthrus plugin list):   {floor * 1000:8.0f} ms")
        print(f"  first apply ({created} created): {first * 1000:8.0f} ms  "
              f"({(first - floor) / total * 1e6:.0f} µs per jobset above the floor)")
        print(f"  second apply (no change):      {second * 1000:8.0f} ms  "
              f"({(second - floor) / total * 1e6:.0f} µs per jobset above the floor)")
        print(f"  ratio second/first: {second / first:.2f}")


if __name__ == "__main__":
    main()
