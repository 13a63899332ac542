"""Mutation check: plant each known fault in a temporary copy of the repo and run the tests that must catch it.

    nice -n 19 python scripts/mutate.py                 # all faults; writes docs/MUTATION.md; exit 1 if one survives
    python scripts/mutate.py --check                    # only: is every fault's snippet still in the code?
    python scripts/mutate.py --list
    python scripts/mutate.py --only kmeans-farthest,lsh-no-negation --no-baseline

The fault table is tests/mutation_faults.py, the runner tests/mutation.py (dev tooling, not part of the yolo_attn
package).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from mutation import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
