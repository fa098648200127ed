#!/usr/bin/env bash
# Fuzzes every parser of outside data (host/fuzz/fuzz_targets): each target
# runs for MINUTES minutes (default 10) with libFuzzer, on stable Rust
# (cargo fuzz --sanitizer none: coverage-guided, no sanitizer runtime).
# Not part of CI. Crashes land in host/fuzz/artifacts/TARGET/; each one
# found is fixed and kept as a unit test beside its parser.
#
#   bench/fuzz.sh [MINUTES] [TARGET...]
set -euo pipefail
minutes=${1:-10}
shift || true
cd "$(dirname "$0")/../host"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
cargo fuzz build --fuzz-dir fuzz --sanitizer none
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    started=$(date +%s)
    # The seeds are read, the corpus grows in fuzz/corpus (not committed).
    cargo fuzz run --fuzz-dir fuzz --sanitizer none "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time=$((minutes * 60)) -rss_limit_mb=4096 -timeout=30 -print_final_stats=1 \
        2>&1 | grep -E "^(stat::|==|SUMMARY|#[0-9]+ *DONE|Done)" || true
    echo "fuzz: $target ran $(( $(date +%s) - started )) s; corpus $(ls "fuzz/corpus/$target" | wc -l) inputs;" \
        "crashes: $(ls "fuzz/artifacts/$target" 2>/dev/null | wc -l)"
done
