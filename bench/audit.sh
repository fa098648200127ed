#!/usr/bin/env bash
# Checks every crate of Cargo.lock (and of the plugins' and test plugins'
# lock files) against the RustSec advisory database, offline: give the
# database's checkout (github.com/rustsec/advisory-db) as ADVISORY_DB.
# Not part of CI (it would have no database).
#
#   ADVISORY_DB=/path/to/advisory-db bench/audit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
db=${ADVISORY_DB:?set ADVISORY_DB to a checkout of github.com/rustsec/advisory-db}
command -v cargo-audit >/dev/null 2>&1 || cargo install cargo-audit --locked
# Advisories weighed and accepted, each with its reason:
# - RUSTSEC-2023-0071 (rsa, Marvin timing side channel, no fixed release):
#   russh always links rsa; Orthrus is only an SSH client, to machines its
#   operator lists, and signs with an RSA key only where the operator gave
#   one (ed25519 keys avoid it). Exploiting it needs precise timing of many
#   private-key operations by the far side.
accepted=(--ignore RUSTSEC-2023-0071)
status=0
for lock in Cargo.lock tests/plugins/Cargo.lock host/fuzz/Cargo.lock; do
    echo "== $lock"
    cargo audit --db "$db" --no-fetch "${accepted[@]}" --file "$lock" || status=$?
done
exit $status
