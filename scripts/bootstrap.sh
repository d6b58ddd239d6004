#!/usr/bin/env bash
# Prepares a fresh Debian machine for mirrorfleet, then runs the given command under Node.js >= 22.18.
#
#   bash scripts/bootstrap.sh COMMAND [ARGS...]
#
# Steps, each skipped when already done:
#   1. Node.js: when the system Node is older than 22.18 (the first 22.x release that runs TypeScript
#      without flags), install Node 24 from the npm registry into .tools/node and put it first on PATH.
#   2. Debian packages: redis-server, docker-registry and skopeo (plus buildah when
#      MIRRORFLEET_NEED_BUILDAH=1), installed with apt-get when their commands are missing.
#   3. npm dependencies: `npm ci` when node_modules is missing or older than package-lock.json.
# Progress goes to stderr so that a command's own stdout (for example --json output) stays clean.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

say() { printf '[setup] %s\n' "$*" >&2; }

node_is_recent() {
  local version
  version=$("$1" -p 'process.versions.node' 2>/dev/null) || return 1
  local major=${version%%.*} rest=${version#*.}
  local minor=${rest%%.*}
  [ "$major" -gt 22 ] || { [ "$major" -eq 22 ] && [ "$minor" -ge 18 ]; }
}

# 1. Node.js
local_node_bin="$root/.tools/node/node_modules/.bin"
if ! command -v node >/dev/null 2>&1 || ! node_is_recent node; then
  if ! [ -x "$local_node_bin/node" ] || ! node_is_recent "$local_node_bin/node"; then
    say "system Node.js is older than 22.18: installing Node 24 from the npm registry into .tools/node"
    mkdir -p "$root/.tools/node"
    npm install --prefix "$root/.tools/node" --no-audit --no-fund --loglevel=error node@24 >&2
  fi
  export PATH="$local_node_bin:$PATH"
fi

# 2. Debian packages
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
if [ "${MIRRORFLEET_NEED_BUILDAH:-0}" = 1 ]; then
  command -v buildah >/dev/null 2>&1 || missing+=(buildah)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { say "cannot install ${missing[*]}: not root and no sudo; install them and run again"; exit 1; }
    sudo_cmd=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq >&2
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# 3. npm dependencies
stamp="$root/node_modules/.mirrorfleet-lock"
lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
if ! [ -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
  say "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >&2
  printf '%s' "$lock_hash" > "$stamp"
fi

export PATH="$root/node_modules/.bin:$PATH"
exec "$@"
