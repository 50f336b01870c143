#!/usr/bin/env bash
# Builds the heex-agent Debian package: size-optimised binaries (profile agent-small), then the man pages and shell
# completions generated from their command lines, then `cargo deb` (metadata in
# packaging/Cargo.toml). Prints the path of the .deb on its last line.
# Needs cargo-deb (`cargo install cargo-deb --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
assets="$target_dir/agent-small/heex-assets"

# Both run on small robots: they are built with the size-optimised profile (the agent's idle
# RSS and binary size are product requirements; the installer runs once, speed is moot).
# One at a time: built together, the agent's dependencies would get the installer's features
# (TLS 1.2, for one) and the packaged agent would be bigger than the one benchmarked.
cargo build --profile agent-small --locked -p heex-agent
cargo build --profile agent-small --locked -p heex-installer
rm -rf "$assets"
cargo run --quiet --locked -p heex-packaging --bin heex-package-assets -- "$assets" >/dev/null
# Debian policy wants man pages compressed; cargo-deb leaves files under target/ as they are.
gzip -9n "$assets"/man/*.8
cargo deb --locked -p heex-packaging --profile agent-small --no-build --output "$target_dir/debian/" | tail -n 1
