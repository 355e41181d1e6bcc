"""Self-supervised pretraining of the embedded default's tiny encoder: see `hf_ssl_robust.pretraining`.

    python scripts/pretrain_tiny.py --output_dir outputs/embedded/shapes-resnet-tiny   # see make_embedded_default.sh
    accelerate launch scripts/pretrain_tiny.py --num_workers 8 ...                    # a GPU: batches made in workers
"""

from hf_ssl_robust.pretraining import main

if __name__ == "__main__":
    main()
