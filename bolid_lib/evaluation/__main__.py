"""Evaluation: python -m bolid_lib.evaluation --real DIR --generated DIR ..."""

import sys

from .evaluate import main

sys.exit(main())
