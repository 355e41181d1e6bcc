"""The robustness figure from results files: see `hf_ssl_robust.plots`.

    python scripts/plot_results.py docs/embedded_default/results.json docs/embedded_default/random_weights_results.json \
        --output docs/embedded_default/robustness.png
"""

from hf_ssl_robust.plots import main

if __name__ == "__main__":
    main()
