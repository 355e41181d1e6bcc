"""Strength and cost of the `strong` suite and Square on one encoder: `hf_ssl_robust/strength.py`.

    nice -n 10 python scripts/bench_strength.py --max_eval_samples 128 --output_dir outputs/strength
    python scripts/bench_strength.py --encoder ./enc --eps 8/255 --max_eval_samples 8 --steps 2   # smoke run
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hf_ssl_robust.strength import main  # noqa: E402

if __name__ == "__main__":
    main()
