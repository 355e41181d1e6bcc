"""DeACL adversarial fine-tuning of a self-supervised encoder (one process, or many with accelerate).

    accelerate launch scripts/deacl.py --encoder facebook/dino-vitb16 --image_folder /data/imagenet/train \
        --output_dir runs/dino-vitb16-deacl
    python scripts/deacl.py --config my_deacl.yaml --max_steps 200

The same as `hf-ssl-robust deacl`. Every `DeACLConfig` field is a flag; `--config FILE` (YAML or
JSON) sets defaults that flags override. CPU, 2 processes: ACCELERATE_USE_CPU=1 accelerate launch
--multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no scripts/deacl.py ...
"""

from hf_ssl_robust.cli import deacl_main, parse_config, run_script  # noqa: F401  (parse_config: used by tests)

main = deacl_main

if __name__ == "__main__":
    run_script("deacl")  # one-line errors and exit code 2, as `hf-ssl-robust deacl`
