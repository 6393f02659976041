"""Dataset tools: python -m bolid_lib.data prepare|... """

import sys

from .prepare import main

sys.exit(main())
