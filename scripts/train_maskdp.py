#!/usr/bin/env python
"""Train a video classifier with MaskDP on an anonymized dataset (same as `hf-maskdp train`).

python scripts/train_maskdp.py DATASET OUTPUT_DIR --target-epsilon 1 --epochs 5
"""

import argparse
import sys

from hf_maskdp.commands.train import add_arguments, run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
