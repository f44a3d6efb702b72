"""KFP v2 components: each a thin typed wrapper that turns artifacts and parameters into one shoprec call.

All components run in the same image, chosen by one setting (``SHOPREC_IMAGE`` at compile time),
which already has shoprec installed: nothing is pip-installed at run time.
"""

import os

from shoprec import __version__

BASE_IMAGE = os.environ.get("SHOPREC_IMAGE", f"ghcr.io/shoprec/shoprec:{__version__}")
