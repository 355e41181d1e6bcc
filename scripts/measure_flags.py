"""What the automatic warnings see and cost on the bundled encoder: `hf_ssl_robust/flags_cost.py`.

    python scripts/measure_flags.py [--encoder shapes-resnet-tiny] [--num_images 32] [--out docs/strength/flags_cost.json]
"""

from hf_ssl_robust.flags_cost import main

if __name__ == "__main__":
    main()
