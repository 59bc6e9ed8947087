#!/usr/bin/env bash
# Sets up jaxlogit on a fresh machine: Fashion-MNIST (Debian package), a venv in .venv, the package.
#   bash scripts/setup.sh          # runtime only (enough for experiments and the CLI)
#   bash scripts/setup.sh --test   # + torch/torchvision/torchattacks and pytest (reference tests)
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--test" ] && extras="[torch,test]"

if ! ls /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte* >/dev/null 2>&1 && [ -z "${JAXLOGIT_DATA:-}" ]; then
  echo "setup: installing Fashion-MNIST (apt-get install dataset-fashion-mnist)"
  sudo=""
  [ "$(id -u)" = "0" ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
echo "setup: installing jaxlogit$extras into .venv"
.venv/bin/python -m pip install -q -e ".$extras"
echo "setup: done (.venv/bin/jaxlogit info shows what was found)"
