#!/usr/bin/env bash
# Builds the heex-agent Debian package: release binaries, then the man pages and shell
# completions generated from their command lines, then `cargo deb` (metadata in
# packaging/Cargo.toml). Prints the path of the .deb on its last line.
# Needs cargo-deb (`cargo install cargo-deb --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
assets="$target_dir/release/heex-assets"

cargo build --release --locked -p heex-agent -p heex-installer
rm -rf "$assets"
cargo run --quiet --locked -p heex-packaging --bin heex-package-assets -- "$assets" >/dev/null
# Debian policy wants man pages compressed; cargo-deb leaves files under target/ as they are.
gzip -9n "$assets"/man/*.8
cargo deb --locked -p heex-packaging --no-build --output "$target_dir/debian/" | tail -n 1
