#!/usr/bin/env bash
# Install what this checkout needs and is missing: Debian packages (PostgreSQL 15, Redis,
# RabbitMQ, Chromium for browser tests), uv, the project virtualenv from uv.lock, and LocalStack
# in its own Python 3.13 virtualenv from scripts/localstack-requirements.txt.
# Safe to run again: each step checks first and does nothing when already done.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

apt_packages=()
[ -x "$PG_BIN/postgres" ] || apt_packages+=(postgresql-15)
command -v psql >/dev/null || apt_packages+=(postgresql-client-15)
command -v redis-server >/dev/null || apt_packages+=(redis-server)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || apt_packages+=(rabbitmq-server)
command -v chromium >/dev/null || apt_packages+=(chromium)
command -v curl >/dev/null || apt_packages+=(curl)

install_apt() {
  [ ${#apt_packages[@]} -gt 0 ] || return 0
  [ "$(id -u)" = 0 ] || die "missing Debian packages (${apt_packages[*]}): install them as root"
  say "installing Debian packages: ${apt_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${apt_packages[@]}" >"$STATE/apt.log" 2>&1 \
    || die "apt-get install failed; see $STATE/apt.log"
  # The Debian packages enable system services; ours run privately, so keep theirs from ever
  # holding the default ports.
  for svc in redis-server rabbitmq-server postgresql; do
    (service "$svc" stop || true) >/dev/null 2>&1
  done
}

install_uv() {
  command -v uv >/dev/null && return 0
  say "installing uv"
  python3 -m pip install -q 'uv==0.13.9' || die "pip could not install uv"
}

install_venv() {
  say "syncing .venv from uv.lock"
  uv sync --frozen --quiet || die "uv sync failed"
}

install_localstack() {
  local dir="$STATE/localstack" want have
  want=$(sha1sum "$ROOT/scripts/localstack-requirements.txt" | cut -c1-12)
  have=$(cat "$dir/venv/.requirements-sha" 2>/dev/null || true)
  [ "$want" = "$have" ] && [ -x "$dir/venv/bin/python" ] && return 0
  [ -x "$LOCALSTACK_PYTHON" ] || die "LocalStack needs Python >= 3.13 at $LOCALSTACK_PYTHON (set LOCALSTACK_PYTHON)"
  say "installing LocalStack into $dir/venv"
  mkdir -p "$dir"
  rm -rf "$dir/venv"
  uv venv --quiet -p "$LOCALSTACK_PYTHON" "$dir/venv" || die "could not create $dir/venv"
  VIRTUAL_ENV="$dir/venv" uv pip install --quiet -r "$ROOT/scripts/localstack-requirements.txt" \
    || die "LocalStack install failed"
  echo "$want" >"$dir/venv/.requirements-sha"
}

mkdir -p "$STATE"; chmod 755 "$STATE"
install_uv
# apt and the Python installs do not touch each other: run them side by side.
install_apt &
apt_pid=$!
install_venv
install_localstack
wait "$apt_pid" || die "installing Debian packages failed"
