"""Write README's embedded-default blocks from the committed run's files: see `hf_ssl_robust.embedded_report`.

    python scripts/readme_results.py            # rewrite the blocks in README.md
    python scripts/readme_results.py --check    # exit 1 if README disagrees with docs/embedded_default/
"""

import sys
from pathlib import Path

from hf_ssl_robust.embedded_report import main

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    sys.exit(main(readme=REPO / "README.md", results_dir=REPO / "docs" / "embedded_default"))
