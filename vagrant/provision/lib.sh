# shellcheck shell=bash
# Helpers the provisioning scripts source: messages, Debian packages, binaries. Sourcing it runs nothing.

say() { echo "${0##*/} [${NODE_NAME:-?}]: $*" >&2; }
fail() {
    say "$*"
    exit 1
}

need_root() { [[ $(id -u) == 0 ]] || fail "must run as root"; }

# install_packages PKG…: apt-get installs those not installed yet; nothing is fetched when all are there (the qemu
# lab's root filesystem has them and no internet).
install_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    say "installing ${missing[*]}"
    apt-get update -q || fail "apt-get update failed: no package mirror; preinstall ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# install_bin SRC DEST: installs SRC as DEST, replacing a running binary whole (write, then rename).
install_bin() { install -m 0755 "$1" "$2.new" && mv -f "$2.new" "$2"; }

# write_file DEST MODE: stdin to DEST, atomically.
write_file() {
    local tmp
    tmp=$(mktemp "$1.XXXXXX")
    cat >"$tmp"
    chmod "$2" "$tmp"
    mv -f "$tmp" "$1"
}

# wait_until SECONDS WHAT CMD…: runs CMD every 2 s until it succeeds; fails naming WHAT after SECONDS.
wait_until() {
    local limit=$1 what=$2
    local deadline=$((SECONDS + limit))
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "timed out after ${limit}s waiting for $what"
        sleep 2
    done
}
