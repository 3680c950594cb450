#!/usr/bin/env bash
# Builds the Lambda package: the updraft binary as `bootstrap` in target/lambda/updraft/, which
# config/aws/template.yaml deploys on the provided.al2023 runtime.
#
# The binary must run on Amazon Linux 2023 (glibc 2.34). Build it on AL2023 (or in its
# container image) with plain `cargo build`, or elsewhere with cargo-zigbuild pinning the glibc
# version: UPDRAFT_LAMBDA_TARGET=x86_64-unknown-linux-gnu.2.34 config/aws/build-lambda.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${UPDRAFT_LAMBDA_TARGET:-}"
if [ -n "$target" ]; then
    cargo zigbuild --release -p updraft --target "$target"
    bin="target/${target%.*}/release/updraft"
else
    cargo build --release -p updraft
    bin="${CARGO_TARGET_DIR:-target}/release/updraft"
fi
mkdir -p target/lambda/updraft
cp "$bin" target/lambda/updraft/bootstrap
strip target/lambda/updraft/bootstrap 2>/dev/null || true
echo "target/lambda/updraft/bootstrap: $(du -h target/lambda/updraft/bootstrap | cut -f1)"
