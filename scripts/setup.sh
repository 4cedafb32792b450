#!/usr/bin/env bash
# Installs everything the gateway needs on a fresh Debian 12 machine, idempotently:
# system packages, bpf-linker, cargo-fuzz and cargo-deb (only when missing), the Python
# environment with Cloudflare's official SDK the API tests drive, and the bpffs mount.
# Run as root. Safe to run again: each step checks before it acts.
set -euo pipefail

PACKAGES=(
  # eBPF toolchain: Debian's rustc ships a prebuilt `core` for bpfel-unknown-none.
  rustc-web libstd-rust-web-dev-bpf llvm-22-dev
  # boring-sys builds BoringSSL from source.
  cmake libclang-dev git
  # Lab, tests and debugging.
  iproute2 openssl curl python3 python3-venv bpftool tcpdump ethtool procps
  # The Debian package's checks (`cargo xtask deb`).
  lintian
  # The peer the TLS benchmark compares against; Prometheus and promtool.
  nginx prometheus
  # The font the flood benchmark's plot is drawn with.
  fonts-dejavu-core
  # A real browser for the lab (its post-quantum ClientHello spans two segments)
  # and its WebDriver, which the dashboard tests drive it through.
  chromium chromium-driver
  # Fleet mode: the etcd-client crate's build needs protoc and the well-known
  # protos; etcd-server and etcd-client run the fleet tests' real cluster.
  protobuf-compiler libprotobuf-dev etcd-server etcd-client
  # ACME: Let's Encrypt's test server (pebble, pebble-challtestsrv) for the
  # certificate issuance tests (tests/tests/acme.rs).
  pebble
)

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh must run as root (it installs packages and mounts bpffs)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages must not start services (nginx would take port 80): the tests and
  # benchmarks start what they need themselves.
  no_services=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    no_services=1
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ -n "$no_services" ]; then rm -f /usr/sbin/policy-rc.d; fi
else
  log "Debian packages already installed"
fi

if ! command -v bpf-linker >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/bpf-linker" ]; then
  log "installing bpf-linker (about 2 minutes)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker --no-default-features --features llvm-22
else
  log "bpf-linker already installed"
fi

if ! command -v cargo-fuzz >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo-fuzz" ]; then
  log "installing cargo-fuzz (about 1 minute)"
  cargo install --locked cargo-fuzz
else
  log "cargo-fuzz already installed"
fi

if ! command -v cargo-deb >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo-deb" ]; then
  log "installing cargo-deb (about 2 minutes)"
  cargo install --locked cargo-deb
else
  log "cargo-deb already installed"
fi

# Cloudflare's official Python SDK, pinned, for the admin API's SDK tests.
SDK_VERSION=5.9.0
SDK_VENV="$(cd "$(dirname "$0")/.." && pwd)/target/python/cloudflare-$SDK_VERSION"
if ! "$SDK_VENV/bin/python" -c "import cloudflare, sys; sys.exit(cloudflare.__version__ != '$SDK_VERSION')" 2>/dev/null; then
  log "installing the cloudflare $SDK_VERSION Python SDK into $SDK_VENV"
  python3 -m venv "$SDK_VENV"
  "$SDK_VENV/bin/pip" install -q --disable-pip-version-check "cloudflare==$SDK_VERSION"
else
  log "cloudflare $SDK_VERSION Python SDK already installed"
fi

# WebSocket and gRPC implementations, pinned, for tests/tests/protocols.rs.
PROTO_VENV="$(cd "$(dirname "$0")/.." && pwd)/target/python/protocols"
PROTO_PACKAGES="websockets==15.0.1 grpcio==1.74.0"
if ! "$PROTO_VENV/bin/python" -c "import websockets, grpc, sys; sys.exit((websockets.__version__, grpc.__version__) != ('15.0.1', '1.74.0'))" 2>/dev/null; then
  log "installing $PROTO_PACKAGES into $PROTO_VENV"
  python3 -m venv "$PROTO_VENV"
  # shellcheck disable=SC2086 # one word per package
  "$PROTO_VENV/bin/pip" install -q --disable-pip-version-check $PROTO_PACKAGES
else
  log "websockets and grpcio already installed"
fi

if ! mountpoint -q /sys/fs/bpf; then
  log "mounting bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi

log "ready"
