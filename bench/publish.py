#!/usr/bin/env python3
"""Publishing to a binary cache: Orthrus against Nix itself.

N store paths of random (incompressible) content are published to an
empty `file://` cache twice per compression — by `orthrus publish` (the
code the server's publishers run: NAR dump, compression, SHA-256, signed
narinfo, `concurrency` paths at a time) and by `nix copy --to` with the
same key — and the script prints NARs per second, MB per second and the
ratio of the two. A second `orthrus publish` of the same paths measures
looking before writing (nothing is written again). The paths are deleted
from the store afterwards.

    bench/publish.py [--paths 100] [--kib 256] [--binary target/release/orthrus]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

from orthrus_bench import BINARY, nix_env


def run(args, env):
    started = time.monotonic()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=100)
    parser.add_argument("--kib", type=int, default=256, help="size of each path's file")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--binary", default=BINARY)
    args = parser.parse_args()
    env = nix_env()
    with tempfile.TemporaryDirectory(prefix="orthrus-publish-bench-") as work:
        files = os.path.join(work, "files")
        os.makedirs(files)
        for i in range(args.paths):
            with open(os.path.join(files, f"blob-{i}"), "wb") as f:
                f.write(os.urandom(args.kib * 1024))
        paths = subprocess.run(
            ["nix-store", "--add"] + [os.path.join(files, f"blob-{i}") for i in range(args.paths)],
            env=env, check=True, capture_output=True, text=True,
        ).stdout.split()
        secret = os.path.join(work, "secret")
        subprocess.run(["nix-store", "--generate-binary-cache-key", "bench-1", secret, secret + ".pub"], env=env, check=True)
        config = os.path.join(work, "orthrus.toml")
        with open(config, "w") as f:
            f.write(f'data_dir = "{work}/data"\n[binary_cache]\nsecret_key_file = "{secret}"\n')
        megabytes = args.paths * args.kib / 1024
        print(f"{args.paths} paths of {args.kib} KiB ({megabytes:.1f} MB), concurrency {args.concurrency}")
        print(f"{'compression':<12} {'orthrus s':>10} {'NAR/s':>8} {'MB/s':>8} {'nix copy s':>11} {'NAR/s':>8} {'MB/s':>8} {'ratio':>6}")
        try:
            for compression in ["none", "xz", "zstd"]:
                ours = os.path.join(work, f"orthrus-{compression}")
                theirs = os.path.join(work, f"nix-{compression}")
                orthrus = run([args.binary, "--config", config, "publish", "--concurrency", str(args.concurrency),
                               f"file://{ours}?compression={compression}"] + paths, env)
                nix = run(["nix", "--extra-experimental-features", "nix-command", "copy", "--to",
                           f"file://{theirs}?compression={compression}&secret-key={secret}"] + paths, env)
                print(f"{compression:<12} {orthrus:>10.2f} {args.paths / orthrus:>8.1f} {megabytes / orthrus:>8.1f} "
                      f"{nix:>11.2f} {args.paths / nix:>8.1f} {megabytes / nix:>8.1f} {orthrus / nix:>6.2f}")
                if compression == "xz":
                    again = run([args.binary, "--config", config, "publish", f"file://{ours}?compression=xz"] + paths, env)
                    print(f"{'xz again':<12} {again:>10.2f}  (every path there already: looked at, not written)")
        finally:
            subprocess.run(["nix-store", "--delete"] + paths, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
