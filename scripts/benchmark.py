"""`accelerate launch scripts/benchmark.py --encoders facebook/dinov2-small --tasks classification --datasets cifar10`

The same as `hf-ssl-robust benchmark`, on one process or many (see `--help`).
"""

import sys

from hf_ssl_robust.cli import benchmark_main

if __name__ == "__main__":
    sys.exit(benchmark_main(sys.argv[1:]))
