#!/usr/bin/env bash
# Builds a Debian package and prints its path on its last line (metadata in packaging/Cargo.toml).
# Needs cargo-deb (`cargo install cargo-deb --locked`).
#
#   bash packaging/build-deb.sh [agent] [--deb-version VERSION]   heex-agent: heex-agent and
#       heex-installer (size-optimised, profile agent-small), their man pages and completions
#   bash packaging/build-deb.sh cloud [--deb-version VERSION]     heex-cloud (profile release)
#   bash packaging/build-deb.sh agent --arch arm64|armhf [--install]   heex-agent for 64-bit
#       or 32-bit ARM, the same contents cross-built by packaging/cross-build.sh (--install: the
#       cross toolchain, when missing)
#
# --deb-version replaces the package version (default: the workspace version, revision 1),
# e.g. 0.1.0-1+local1 for a build that must upgrade an installed one.
set -euo pipefail
cd "$(dirname "$0")/.."

package=agent
version_flags=()
arch=
cross_flags=()
while [ "$#" -gt 0 ]; do
    case $1 in
        agent | cloud) package=$1 ;;
        --arch)
            case ${2:-} in
                arm64 | armhf) arch=$2 ;;
                *) echo "build-deb.sh: --arch takes arm64 or armhf" >&2; exit 64 ;;
            esac
            shift
            ;;
        --install) cross_flags=(--install) ;;
        --deb-version)
            [ "$#" -ge 2 ] || { echo "build-deb.sh: --deb-version needs a value" >&2; exit 64; }
            version_flags=(--deb-version "$2")
            shift
            ;;
        *)
            echo "usage: build-deb.sh [agent|cloud] [--arch arm64|armhf [--install]] [--deb-version VERSION]" >&2
            exit 64
            ;;
    esac
    shift
done

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

if [ -n "$arch" ] && [ "$package" = cloud ]; then
    echo "build-deb.sh: the cloud is packaged for amd64 only (--arch is for the agent)" >&2
    exit 64
fi

if [ "$package" = cloud ]; then
    cargo build --release --locked -p heex-cloud
    cargo deb --locked -p heex-packaging --variant cloud --no-build "${version_flags[@]}" \
        --output "$target_dir/debian/" | tail -n 1
    exit 0
fi

target_flags=()
bin_dir=$target_dir/agent-small
if [ -n "$arch" ]; then
    # The last line is the binaries' directory, target/<triple>/agent-small.
    bin_dir=$(bash packaging/cross-build.sh "${cross_flags[@]}" "$arch" | tail -n 1)
    target_flags=(--target "$(basename "$(dirname "$bin_dir")")")
fi
assets="$bin_dir/heex-assets"
# Both run on small robots: they are built with the size-optimised profile (the agent's idle
# RSS and binary size are product requirements; the installer runs once, speed is moot).
# One at a time: built together, the agent's dependencies would get the installer's features
# (TLS 1.2, for one) and the packaged agent would be bigger than the one benchmarked.
if [ -z "$arch" ]; then
    cargo build --profile agent-small --locked -p heex-agent
    cargo build --profile agent-small --locked -p heex-installer
fi
# Man pages and completions are text: made by a build for this machine, whatever the target.
rm -rf "$assets"
cargo run --quiet --locked -p heex-packaging --bin heex-package-assets -- "$assets" >/dev/null
# Debian policy wants man pages compressed; cargo-deb leaves files under target/ as they are.
gzip -9n "$assets"/man/*.8
cargo deb --locked -p heex-packaging --profile agent-small --no-build "${target_flags[@]}" "${version_flags[@]}" \
    --output "$target_dir/debian/" | tail -n 1
