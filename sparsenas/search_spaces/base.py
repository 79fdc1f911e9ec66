"""The SearchSpace interface every space implements."""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from ..arch import Arch
from ..errors import InvalidArch, SparseNASError
from ..task import Task

if TYPE_CHECKING:  # keep optuna and torch off the import path of light commands
    import optuna
    from torch import nn

    from ..ops.spec import LayerSpec


class SearchSpace(ABC):
    """A discrete space of architectures for a task.

    Subclasses set ``name``/``version``/``description``/``default_dataset`` and implement
    :meth:`choices` and :meth:`build`. Everything else (Optuna suggestion, sampling, validation,
    the kernel list) is derived from those two, so a new space stays one short module.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    description: ClassVar[str] = ""
    default_dataset: ClassVar[str] = "digits"

    @abstractmethod
    def choices(self, task: Task) -> dict[str, list]:
        """Choice name -> allowed values (numbers or strings), in a fixed order."""

    @abstractmethod
    def build(self, arch: Arch, task: Task) -> "nn.Module":
        """A standalone network for ``task``; input (B, *task.input_shape) -> logits (B, classes)."""

    def check_task(self, task: Task) -> None:
        """Raise SparseNASError when the space cannot serve ``task`` (wrong input rank, size...)."""

    def check_network(self, task: Task, seed: int = 0) -> None:
        """Build one sampled architecture and run a batch of 2 zero inputs through it: a space whose
        networks fail or return another shape than (batch, classes) is stopped here, before any
        trial, with the shape it should return (a plug-in's bug would otherwise fail every trial)."""
        import torch

        arch = self.sample(random.Random(seed), task)
        expected = (2, task.num_classes)
        where = f"space '{self.name}' ({type(self).__module__}.{type(self).__qualname__})"
        try:
            model = self.build(arch, task).eval()
            with torch.no_grad():
                out = model(torch.zeros(2, *task.input_shape))
        except SparseNASError:
            raise
        except Exception as e:  # the plug-in's network, not ours: say where, without a traceback
            raise SparseNASError(f"{where}: build() then forward on an input of shape {(2, *task.input_shape)} "
                                 f"failed with {type(e).__name__}: {e}; the network must map (batch, "
                                 f"*{tuple(task.input_shape)}) to logits of shape (batch, {task.num_classes})") from None
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        if shape != expected:
            raise SparseNASError(f"{where}: the network from build() returns {shape} for an input of shape "
                                 f"{(2, *task.input_shape)}; expected logits of shape {expected} = (batch, "
                                 f"num_classes of '{task.dataset}')")

    def require_images(self, task: Task, min_hw: int = 4, why: str = "") -> None:
        """The check every image space shares: (C, H, W) input of at least ``min_hw`` pixels a side."""
        if len(task.input_shape) != 3:
            raise SparseNASError(f"space '{self.name}' needs image data (C, H, W); dataset '{task.dataset}' has "
                                 f"input shape {task.input_shape}. Use an image dataset such as digits, mnist, "
                                 "fashion_mnist or cifar10, or g2g_mlp for sequences")
        if min(task.input_shape[1:]) < min_hw:
            raise SparseNASError(f"space '{self.name}' needs inputs of at least {min_hw}x{min_hw}{why}, "
                                 f"got {task.input_shape}")

    def suggest(self, trial: "optuna.Trial", task: Task) -> Arch:
        return Arch(self.name, self.version,
                    {k: trial.suggest_categorical(k, v) for k, v in self.choices(task).items()})

    def sample(self, rng: random.Random, task: Task) -> Arch:
        return Arch(self.name, self.version, {k: rng.choice(v) for k, v in self.choices(task).items()})

    def upgrade(self, arch: Arch) -> Arch:
        """``arch`` in this version's terms. Spaces that change their choices bump ``version`` and
        override this to translate the architectures of older versions (stored in studies, profiles
        and ``arch.json`` files); the default translates nothing, so other versions fail validation."""
        return arch

    def canonical(self, arch: Arch) -> Arch:
        """One representative of the architectures that build the same network: choices that
        change nothing (a block past its stage's depth, ...) set to a fixed value, so a strategy can
        tell that two proposals are one network. The default: every choice matters."""
        return arch

    def validate(self, arch: Arch, task: Task) -> Arch:
        """Raise SparseNASError unless ``arch`` (after :meth:`upgrade`) is an architecture of this
        space for ``task``; returns the upgraded architecture, which is the one to build."""
        if arch.space != self.name:
            raise SparseNASError(f"architecture is for space '{arch.space}', not '{self.name}'")
        arch = self.upgrade(arch)
        if arch.version != self.version:
            raise SparseNASError(f"architecture is for version {arch.version} of space '{self.name}'; "
                                 f"this sparsenas has version {self.version}")
        allowed = self.choices(task)
        for key in arch.choices:
            if key not in allowed:
                raise InvalidArch(key, arch.choices[key], f"no such choice; known choices: {', '.join(allowed)}",
                                  self.name)
        for key, values in allowed.items():
            if key not in arch.choices:
                raise InvalidArch(key, None, values, self.name)
            if arch.choices[key] not in values:
                raise InvalidArch(key, arch.choices[key], values, self.name)
        return arch

    def layers(self, arch: Arch, task: Task, batch: int = 1) -> "list[LayerSpec]":
        """The kernels the built network runs, in order: derived by tracing the real network, so the
        latency table's keys can never drift from what ``build`` makes."""
        from ..ops.spec import trace_layers

        return trace_layers(self.build(arch, task), task.input_shape, batch=batch)

    def kernel_specs(self, task: Task, *, seed: int = 0, patience: int = 200,
                     max_samples: int = 5000) -> "set[LayerSpec]":
        """Every distinct kernel a network of this space can run for ``task`` (the keys a hardware
        profile needs), sparsities at their nominal values.

        Default: trace random architectures until ``patience`` samples in a row bring no new key
        (or ``max_samples``). Spaces whose kernels follow from their choices override it with an
        exact enumeration. Traced sparsities are snapped to the sparsity values of the choices.
        """
        from ..ops.spec import LayerSpec

        levels = sorted({float(v) for k, vals in self.choices(task).items() if "sparsity" in k for v in vals})

        def nominal(s: "LayerSpec") -> "LayerSpec":
            if not levels:
                return s
            sp = min(levels, key=lambda v: abs(v - s.sparsity))
            return LayerSpec(s.op, s.cin, s.cout, s.kernel, s.stride, s.groups, s.in_hw, sp, s.batch)

        rng = random.Random(seed)
        found: set[LayerSpec] = set()
        quiet = 0
        for _ in range(max_samples):
            new = {nominal(s) for s in self.layers(self.sample(rng, task), task)} - found
            found |= new
            quiet = 0 if new else quiet + 1
            if quiet >= patience:
                break
        return found

    def size(self, task: Task) -> int:
        n = 1
        for v in self.choices(task).values():
            n *= len(v)
        return n

    def describe(self, task: Task) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "description": self.description,
                "choices": self.choices(task), "size": self.size(task)}
