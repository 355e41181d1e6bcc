"""`accelerate launch scripts/train_head.py --task depth --encoder facebook/dinov2-small --dataset nyu_depth_v2`

The same as `hf-ssl-robust train-head`, on one process or many (see `--help`).
"""

from hf_ssl_robust.cli import run_script

if __name__ == "__main__":
    run_script("train-head")  # one-line errors and exit code 2, as `hf-ssl-robust train-head`
