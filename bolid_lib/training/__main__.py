"""The trainers: python -m bolid_lib.training body-vae|adapter ..."""

import sys

from .cli import main

sys.exit(main())
