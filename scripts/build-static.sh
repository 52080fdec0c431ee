#!/usr/bin/env bash
# Build the shipped artifact: a static x86_64-unknown-linux-musl binary,
# profile `dist` (LTO, one codegen unit, stripped, panic = abort).
#
#   scripts/build-static.sh            # prints the binary's path on stdout last
#
# Installs what it needs: the rustup target, and Debian's musl-tools when a
# dependency compiles C and musl-gcc is missing (needs root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET=x86_64-unknown-linux-musl
log() { printf 'build-static: %s\n' "$*" >&2; }

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    log "rustup target add $TARGET"
    rustup target add "$TARGET" >&2
fi
if ! command -v musl-gcc >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "apt-get install musl-tools (C dependencies are compiled with musl-gcc)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >&2 ||
            log "warning: musl-tools not installed; pure-Rust dependencies build without it"
    else
        log "warning: musl-gcc not found (Debian: apt-get install musl-tools); trying without it"
    fi
fi
if command -v musl-gcc >/dev/null 2>&1; then
    export CC_x86_64_unknown_linux_musl=musl-gcc
fi

t0=$(date +%s)
cargo build --locked --profile dist --target "$TARGET" --bin tally >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$TARGET/dist/tally"
[[ -x "$BIN" ]] || { log "no binary at $BIN"; exit 1; }

log "built in $(( $(date +%s) - t0 )) s"
log "size: $(stat -c %s "$BIN") bytes ($(( $(stat -c %s "$BIN") / 1024 / 1024 )) MiB)"
log "file: $(file -b "$BIN" 2>/dev/null || echo 'file(1) not installed')"
log "ldd:  $(ldd "$BIN" 2>&1 | tr '\n' ' ')"
if ldd "$BIN" 2>&1 | grep -q '=>'; then
    log "error: $BIN links shared libraries"
    exit 1
fi
log "version: $("$BIN" --version)"
echo "$BIN"
