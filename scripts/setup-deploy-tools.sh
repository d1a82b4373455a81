#!/usr/bin/env bash
# Installs what the deployment-file test (tests/integration/test_deploy_files.py) needs from
# Debian: `docker-compose` (1.29 on Debian 12), whose own `config` command validates
# docker-compose.yml. It needs no Docker engine, and none is installed: without
# --no-install-recommends apt would also bring docker.io and containerd. Safe to run
# again: it does nothing when `docker-compose` is already there. Needs root (apt-get).
# (The Kubernetes schemas come from PyPI: kubernetes-validate in requirements-dev.txt.)
set -euo pipefail

if command -v docker-compose >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "setup-deploy-tools.sh: \`docker-compose\` is missing and installing it needs root" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends docker-compose
