"""The headline benchmark (same as `distilkit bench`): see distilkit/cli/bench.py for what it runs and writes.

    pip install ".[bench]"
    python scripts/benchmark.py --tasks sst2 mrpc
"""

import sys

from distilkit.cli.bench import main_argv

if __name__ == "__main__":
    sys.exit(main_argv())
