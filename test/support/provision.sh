#!/usr/bin/env bash
# Installs, from Debian's packages, what the tests need and the machine lacks:
# redis-server and postgresql (the integration tests start their own on free
# loopback ports unless REDIS_URL / DATABASE_URL name running servers),
# prometheus (promtool checks the agents' metrics; the dashboard test scrapes
# live agents), kubectl (renders the Kubernetes manifests for their offline
# validation), iproute2 (the chaos run's network namespaces), openssl
# (certificates for the TLS Redis the connection tests start) and chromium
# (the web console's browser tests drive it through playwright-core).
# Prints one line saying what it installed, or that nothing was missing.
set -euo pipefail

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v promtool >/dev/null || missing+=(prometheus)
command -v kubectl >/dev/null || missing+=(kubectl)
command -v ip >/dev/null || missing+=(iproute2)
command -v openssl >/dev/null || missing+=(openssl)
command -v chromium >/dev/null || missing+=(chromium)

if [ ${#missing[@]} -eq 0 ]; then
  echo "test dependencies: redis-server, postgresql, prometheus, kubectl, iproute2, openssl, chromium present; nothing to install"
  exit 0
fi

echo "test dependencies: installing ${missing[*]} with apt-get"
sudo=""
if [ "$(id -u)" != "0" ]; then
  if ! command -v sudo >/dev/null; then
    echo "test dependencies: ${missing[*]} missing, and installing them needs root (or sudo)" >&2
    exit 1
  fi
  sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
