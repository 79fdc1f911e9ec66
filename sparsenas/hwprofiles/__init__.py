"""Hardware profiles: kernels timed on the user's machine, and the latency table built on them.

``nas profile`` writes a profile (:mod:`.profiler`), :class:`LatencyTable` reads one and predicts a
network's latency (:mod:`.table`), ``nas profile --validate`` checks predictions against networks
measured end to end (:mod:`.validate`). The profile shipped in this package is the default.
"""
from __future__ import annotations

from .profile import SCHEMA, ProfileError, calibration_key, default_profile_path, read_profile
from ..runtimes import NATIVE
from .table import LatencyTable, MissingKernels, Prediction, layer_impls

__all__ = ["SCHEMA", "NATIVE", "LatencyTable", "MissingKernels", "Prediction", "ProfileError", "calibration_key",
           "default_profile_path", "layer_impls", "read_profile"]
