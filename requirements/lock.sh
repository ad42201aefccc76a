#!/usr/bin/env bash
# Write requirements/lock.txt: every package medtune and its `dev` extra (qlora, ui, the test tools) need, direct and
# transitive, at one exact version each, for Linux x86-64, Python 3.11 and the CPU build of torch.
#   requirements/lock.sh                       re-resolve after a change to pyproject.toml, keeping the other pins
#   requirements/lock.sh --upgrade             the newest versions pyproject.toml allows (a refresh)
#   requirements/lock.sh --upgrade-package X   only X (and what it needs) to its newest allowed version
# The torch wheel comes from $TORCH_WHEELS, a folder or page of wheels (default: the PyTorch CPU index).
# Needs uv (in the dev extra). Review the diff, commit it, and let CI test it.
set -euo pipefail
cd "$(dirname "$0")/.."
uv pip compile pyproject.toml --extra dev \
  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --constraint requirements/torch-cpu.txt --find-links "${TORCH_WHEELS:-https://download.pytorch.org/whl/cpu/torch/}" \
  --custom-compile-command "requirements/lock.sh" --output-file requirements/lock.txt "$@"
