"""Inference runtimes: one module each, registered by name (``torch``, ``onnxruntime``, ``openvino``, ``mnn``).

A runtime says which kernels it really has for a layer, times them in context, turns a network into
the artifact a user deploys and runs it (:class:`~sparsenas.runtimes.base.Runtime`). Hardware
profiles, the latency evaluators and ``nas export`` go through it, so every latency figure belongs to
a named runtime.
"""
from __future__ import annotations

from ..registry import GROUPS, Registry, subclass_adopter
from .base import GROUPED, NATIVE, Chooser, Runtime, RuntimeNotInstalled

__all_modules__ = ("pytorch", "onnxruntime", "openvino", "mnn")

RUNTIMES: Registry = Registry("runtime", __name__, group=GROUPS["runtime"],
                              adopt=subclass_adopter("runtime", Runtime), alias=lambda cls: cls.name)
DEFAULT_RUNTIME = "onnxruntime"  # the default export format, run where users deploy it
# the runtime of studies and profiles written before runtimes were recorded (PyTorch eager); they name none
PRE_RUNTIME = "torch"

__all__ = ["RUNTIMES", "DEFAULT_RUNTIME", "PRE_RUNTIME", "Chooser", "GROUPED", "NATIVE", "Runtime", "RuntimeNotInstalled", "get_runtime"]

_INSTANCES: dict[str, Runtime] = {}


def get_runtime(name: str | Runtime | None = None, *, check: bool = True) -> Runtime:
    """The runtime registered as ``name`` (default :data:`DEFAULT_RUNTIME`; a :class:`Runtime` is
    itself); with ``check``, a clear :class:`RuntimeNotInstalled` naming the extra when its package
    is missing."""
    if isinstance(name, Runtime):
        return name
    name = name or DEFAULT_RUNTIME
    if name not in _INSTANCES:
        _INSTANCES[name] = RUNTIMES.get(name)()
    rt = _INSTANCES[name]
    if check:
        rt.require()
    return rt
