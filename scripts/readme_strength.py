"""Write README's strength blocks (`strength-results`, `flags-cost`) from docs/strength/: `hf_ssl_robust.strength.sync_readme`.

    python scripts/readme_strength.py            # rewrite the blocks in README.md
    python scripts/readme_strength.py --check    # exit 1 if README disagrees with docs/strength/
"""

import sys
from pathlib import Path

from hf_ssl_robust.strength import sync_readme

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    stale = sync_readme(REPO / "README.md", REPO / "docs" / "strength", check="--check" in sys.argv[1:])
    print(f"README blocks {'stale' if '--check' in sys.argv[1:] else 'rewritten'}: {stale}" if stale else "README's strength blocks match docs/strength/")
    sys.exit(1 if stale and "--check" in sys.argv[1:] else 0)
