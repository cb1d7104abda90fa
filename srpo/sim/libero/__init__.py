"""LIBERO (optional extra ``srpo[libero]``): the env adapter, the evaluation protocol and the HDF5 importer.

``convention`` is numpy-only; ``env`` imports LIBERO when a suite is loaded and names the install command if it is
missing."""
