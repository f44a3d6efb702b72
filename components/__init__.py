"""KFP v2 components: each a thin typed wrapper that turns artifacts and parameters into one shoprec call.

Components run in images named by one setting (``SHOPREC_IMAGE_REGISTRY`` and ``SHOPREC_IMAGE_TAG``, or
``SHOPREC_IMAGE`` / ``SHOPREC_TRAINER_IMAGE`` outright, at compile time; see ``shoprec.images``): the CPU base
image for data and registry steps, the CUDA trainer image for training. Both have shoprec installed, so
nothing is pip-installed at run time.
"""

from shoprec.images import base_image, trainer_image

BASE_IMAGE = base_image()
TRAINER_IMAGE = trainer_image()
