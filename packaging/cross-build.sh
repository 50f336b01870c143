#!/usr/bin/env bash
# Cross-builds heex-agent and heex-installer for ARM robots and vehicles, with the same
# size-optimised profile (agent-small) as the amd64 package, and prints the directory of each
# architecture's binaries on a line of its own, last.
#
#   bash packaging/cross-build.sh [--install] [arm64|armhf]...     (default: arm64 armhf)
#
#   arm64   aarch64-unknown-linux-gnu       64-bit ARM (ARMv8-A and later)
#   armhf   armv7-unknown-linux-gnueabihf   32-bit ARM, ARMv7-A with hardware floating point
#
# rustup cannot fetch other targets' standard libraries on every build machine, so the build
# uses Debian's: rustc-web (a Rust compiler newer than the workspace's rust-version) with
# libstd-rust-web-dev for the target architecture, and Debian's cross gcc as linker and C
# compiler (ring builds C). --install installs what is missing (root; Debian 12). The binaries
# link against glibc of Debian 12 (2.36): see README "ARM boards" for the floor they need.
#
# Exit codes: 0 built; 64 usage; 69 a tool or package is missing (without --install).
set -euo pipefail
cd "$(dirname "$0")/.."

install=false
arches=()
for arg in "$@"; do
    case $arg in
        --install) install=true ;;
        arm64 | armhf) arches+=("$arg") ;;
        *)
            echo "usage: cross-build.sh [--install] [arm64|armhf]..." >&2
            exit 64
            ;;
    esac
done
[ "${#arches[@]}" -gt 0 ] || arches=(arm64 armhf)

# Debian architecture -> Rust target, GNU triple of the cross tools.
triple() {
    case $1 in
        arm64) echo aarch64-unknown-linux-gnu ;;
        armhf) echo armv7-unknown-linux-gnueabihf ;;
    esac
}
gnu() {
    case $1 in
        arm64) echo aarch64-linux-gnu ;;
        armhf) echo arm-linux-gnueabihf ;;
    esac
}

rustc=${HEEX_CROSS_RUSTC:-/usr/bin/rustc}
missing=()
[ -x "$rustc" ] || missing+=(rustc-web)
for arch in "${arches[@]}"; do
    command -v "$(gnu "$arch")-gcc" >/dev/null || missing+=("gcc-$(gnu "$arch")" "libc6-dev-$arch-cross")
    [ -d "/usr/lib/rustlib/$(triple "$arch")/lib" ] || missing+=("libstd-rust-web-dev:$arch")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if ! $install; then
        echo "cross-build.sh: missing ${missing[*]}: run with --install (root), or apt-get install them" >&2
        exit 69
    fi
    for arch in "${arches[@]}"; do
        dpkg --print-foreign-architectures | grep -qx "$arch" || dpkg --add-architecture "$arch"
    done
    # The foreign architecture's package lists are fetched only once it is added.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
dirs=()
for arch in "${arches[@]}"; do
    t=$(triple "$arch")
    g=$(gnu "$arch")
    var=$(echo "$t" | tr 'a-z-' 'A-Z_')
    export "CARGO_TARGET_${var}_LINKER=$g-gcc"
    export "CC_${t//-/_}=$g-gcc" "AR_${t//-/_}=$g-ar"
    # One package at a time, as packaging/build-deb.sh does for amd64: built together, the
    # agent's dependencies would get the installer's features.
    for p in heex-agent heex-installer; do
        RUSTC=$rustc cargo build --profile agent-small --locked -p "$p" --target "$t"
    done
    dirs+=("$target_dir/$t/agent-small")
done
printf '%s\n' "${dirs[@]}"
