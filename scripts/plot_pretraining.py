"""The pretraining curve of the embedded default's encoder (`hf_ssl_robust.pretraining --arch resnet`).

Prints its probe lines as a Markdown table and plots them:

    python scripts/plot_pretraining.py outputs/embedded/shapes-resnet-tiny/training_log.jsonl \
        --output docs/embedded_default_pretraining.png
"""

import argparse

from hf_ssl_robust.embedded_report import plot_probes, probe_table, read_probes


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("log", help="training_log.jsonl of hf_ssl_robust.pretraining")
    p.add_argument("--output", default=None, help="PNG to write")
    args = p.parse_args(argv)
    probes = read_probes(args.log)
    if not probes:
        raise SystemExit(f"{args.log} has no probe lines; pretrain with --probe_every_minutes > 0.")
    print(probe_table(probes))
    if args.output:
        plot_probes(probes, args.output)
    return probes


if __name__ == "__main__":
    main()
