"""Parse `sglang.launch_server` arguments with SGLang's own parser and print what it read, as JSON.

Run by tests/test_launch.py with $CAPSIM_SGLANG_PYTHON (a Python where `import sglang` works: SGLang
itself needs a GPU to serve, but its argument parser imports on a CPU machine), e.g.

    pip download --no-deps sglang==0.5.23 && unzip -q sglang-*.whl 'sglang/*' -d sglang-src
    PYTHONPATH=sglang-src python scripts/check_sglang_flags.py '["--model-path", "x", "--tp-size", "2"]'

(it then needs orjson, msgspec, pybase64, starlette, pydantic, pyzmq, tqdm, ipython, torch and triton).
"""

import argparse
import json
import sys

from sglang.srt.server_args import ServerArgs


def main() -> None:
    parser = argparse.ArgumentParser(exit_on_error=False)
    ServerArgs.add_cli_args(parser)
    args = parser.parse_args(json.loads(sys.argv[1]))
    print(json.dumps({k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}))


if __name__ == "__main__":
    main()
