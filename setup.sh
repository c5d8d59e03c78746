#!/usr/bin/env bash
# Everything a fresh machine needs for uqbench: a virtual environment in .venv with the
# project (editable) and its test and Ray extras, plus Debian's Fashion-MNIST when we can
# install system packages. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian's dataset-fashion-mnist (OOD set for the MNIST benchmarks)"
    apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null \
        || echo "setup: could not install dataset-fashion-mnist; its benchmarks will say how to get the data"
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools
# torch/torchvision first and pinned: on this project's machines they come from local disk.
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" 2>/dev/null \
    || .venv/bin/python -m pip install -q "torch>=2.4,<2.15" "torchvision>=0.19,<0.30"
.venv/bin/python -m pip install -q -e ".[test,ray]"
# The laplace-torch plugin: a separate package, installed as a user would install a plugin.
.venv/bin/python -m pip install -q -e ./plugins/uqbench-laplace
echo "setup: ready (.venv)"
