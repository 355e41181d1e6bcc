"""`accelerate launch scripts/train_head.py --task depth --encoder facebook/dinov2-small --dataset nyu_depth_v2`

The same as `hf-ssl-robust train-head`, on one process or many (see `--help`).
"""

import sys

from hf_ssl_robust.cli import train_head_main

if __name__ == "__main__":
    sys.exit(train_head_main(sys.argv[1:]))
