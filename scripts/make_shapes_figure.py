"""ShapesWorld figures (samples, or the pretraining's view pairs): see `hf_ssl_robust.shapes_figures`.

    python scripts/make_shapes_figure.py --output docs/shapesworld.png
    python scripts/make_shapes_figure.py --view_pairs --output docs/view_pairs.png
"""

from hf_ssl_robust.shapes_figures import main

if __name__ == "__main__":
    main()
