"""`accelerate launch scripts/benchmark.py --encoders facebook/dinov2-small --tasks classification --datasets cifar10`

The same as `hf-ssl-robust benchmark`, on one process or many (see `--help`).
"""

from hf_ssl_robust.cli import run_script

if __name__ == "__main__":
    run_script("benchmark")  # one-line errors and exit code 2, as `hf-ssl-robust benchmark`
