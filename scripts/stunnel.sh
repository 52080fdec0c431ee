#!/usr/bin/env bash
# TLS terminator for the Kafka TLS tests (tests/e2e_tls.rs): Debian's stunnel4,
# plus the openssl CLI (PKCS#1 RSA test keys). The tests start their own
# stunnel processes, each in front of a private Tansu that advertises the
# stunnel port (scripts/broker.sh: TALLY_BROKER_ADVERTISED does the same for
# a named broker).
#
#   scripts/stunnel.sh install    # apt-get install stunnel4 openssl when root and missing
set -euo pipefail

log() { printf 'stunnel.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

install() {
    local missing=()
    command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1 || missing+=(stunnel4)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 ||
        die "${missing[*]} not installed (Debian: apt-get install ${missing[*]})"
    log "installing ${missing[*]} with apt-get"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
}

case "${1:-}" in
    install) install ;;
    *) die "usage: scripts/stunnel.sh install" ;;
esac
