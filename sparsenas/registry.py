"""A tiny name -> object registry shared by spaces, strategies, datasets, samplers and runtimes.

A new component is one new module plus ``@REGISTRY.register("name")`` (as timm's
``register_model``). Components defined outside the package are found two more ways, without
touching it:

- an entry point in the registry's group (``[project.entry-points."sparsenas.spaces"]`` in the
  plug-in's pyproject.toml: ``myspace = "mypkg.spaces:MySpace"``), loaded when its name is asked for;
- a ``module.path:Attr`` name (``--space mypkg.spaces:MySpace``): the module is imported, the
  attribute checked to be the right kind and registered under that qualified name.

Lookups of unknown names raise :class:`UnknownName` listing what exists.
"""
from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import SparseNASError, UnknownName

T = TypeVar("T")

# The entry-point groups plug-ins register in (pyproject.toml: [project.entry-points."sparsenas.spaces"]).
GROUPS = {"space": "sparsenas.spaces", "dataset": "sparsenas.datasets", "strategy": "sparsenas.strategies",
          "runtime": "sparsenas.runtimes", "sampler": "sparsenas.samplers", "pruner": "sparsenas.pruners"}

# adopt(obj, key, where) -> the object to register, or raise SparseNASError saying what kind was expected;
# alias(obj) -> the object's own name, under which it is registered too (so that an Arch that names
# its space by that name finds it again), or None
Adopt = Callable[[Any, str], T]


def _ref(obj: Any) -> str:
    """``module:Qualname`` of a component (a dataset spec by its loader): how to import it again."""
    target = obj.load if not isinstance(obj, type) and callable(getattr(obj, "load", None)) else obj
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', type(target).__name__)}"


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None, *, group: str | None = None,
                 adopt: Adopt | None = None, alias: Callable[[T], str | None] | None = None) -> None:
        self.kind = kind
        self._package = package  # imported lazily so that registration decorators have run
        self.group = group       # entry-point group of plug-ins, e.g. "sparsenas.spaces"
        self._adopt = adopt
        self._alias = alias
        self._items: dict[str, T] = {}
        self._loaded = package is None
        self._eps: dict[str, importlib.metadata.EntryPoint] | None = None

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = obj
            return obj

        return deco

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            pkg = importlib.import_module(self._package)
            for mod in getattr(pkg, "__all_modules__", ()):
                importlib.import_module(f"{self._package}.{mod}")

    def entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        """The plug-ins installed for this registry's group, by name (read once per process)."""
        if self._eps is None:
            eps = importlib.metadata.entry_points(group=self.group) if self.group else ()
            self._eps = {ep.name: ep for ep in eps}
        return self._eps

    def get(self, name: "str | Any") -> T:
        """The component called ``name``; a component object itself (a class, a loader...) is
        accepted too and registered under :meth:`name_of`."""
        self._load()
        if not isinstance(name, str):
            return self.get(self.name_of(name))
        if name in self._items:
            return self._items[name]
        if name in self.entry_points():
            return self._plug_in(name, self.entry_points()[name].value, f"entry point '{name}' ({self.group})")
        if ":" in name:
            return self._plug_in(name, name, f"'{name}'")
        allowed = ", ".join(self.names()) or "(none)"
        hint = f" (or a plug-in: an entry point in group '{self.group}', or module.path:Attr)" if self.group else ""
        raise UnknownName(f"unknown {self.kind} '{name}'; available: {allowed}{hint}")

    def _plug_in(self, key: str, target: str, where: str) -> T:
        """Import ``module:attr`` ``target``, check its kind and register it under ``key``."""
        module_name, _, attr = target.partition(":")
        if not module_name or not attr:
            raise UnknownName(f"{self.kind} {where}: expected module.path:Attr, got '{target}'")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            raise UnknownName(f"{self.kind} {where}: cannot import module '{module_name}' ({e}); check the name and "
                              "that its folder is on PYTHONPATH or the package is installed") from None
        except SparseNASError:
            raise
        except Exception as e:  # a plug-in that fails on import is the plug-in's bug, but say where
            raise SparseNASError(f"{self.kind} {where}: importing module '{module_name}' failed with "
                                 f"{type(e).__name__}: {e}") from None
        obj: Any = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                public = sorted(n for n in vars(module) if not n.startswith("_"))
                raise UnknownName(f"{self.kind} {where}: module '{module_name}' has no attribute '{attr}'; "
                                  f"it has: {', '.join(public) or '(nothing public)'}")
            obj = getattr(obj, part)
        adopted = self._adopt(obj, key, where) if self._adopt else obj
        self._items[key] = adopted
        own = self._alias(adopted) if self._alias else None
        if own and own != key:
            if own in self._items and self._items[own] is not adopted:
                raise SparseNASError(f"{self.kind} {where} calls itself '{own}', which is already a different "
                                     f"{self.kind}; give it another name")
            self._items[own] = adopted
        return adopted

    def name_of(self, item: "str | Any") -> str:
        """The name to record for ``item``: a name is itself; a component object (for spaces, a
        class or an instance, which counts as its class) is registered and named by its own name
        when that is free or already this object, else by its importable ``module:Qualname``."""
        if isinstance(item, str):
            return item
        self._load()
        obj = item
        try:
            adopted = self._adopt(obj, _ref(obj), f"object {_ref(obj)}") if self._adopt else obj
        except SparseNASError:
            if isinstance(item, type) or callable(item):
                raise
            obj = type(item)  # an instance of a component class (a space) counts as its class
            adopted = self._adopt(obj, _ref(obj), f"object {_ref(obj)}") if self._adopt else obj
        ref = _ref(obj)
        self._items.setdefault(ref, adopted)
        own = self._alias(adopted) if self._alias else None
        if own and self._items.get(own, adopted) is adopted:
            self._items[own] = adopted
            return own
        return ref

    def ref_of(self, name: str) -> str | None:
        """The importable ``module:Qualname`` of a component that lives outside sparsenas (None for
        built-ins): what an export records so that another process finds the plug-in again."""
        ref = _ref(self.get(name))
        return None if ref.split(":")[0].split(".")[0] == "sparsenas" else ref

    def names(self) -> list[str]:
        self._load()
        return sorted(set(self._items) | set(self.entry_points()))

    def items(self) -> Iterator[tuple[str, T]]:
        """Every component, plug-ins from entry points loaded (a broken one raises SparseNASError)."""
        self._load()
        for name in self.entry_points():
            self.get(name)
        return iter(sorted(self._items.items()))

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items or name in self.entry_points()


def subclass_adopter(kind: str, base: type) -> Adopt:
    """An ``adopt`` that takes concrete subclasses of ``base`` with a ``name`` (spaces, strategies)."""
    import inspect

    def adopt(obj: Any, key: str, where: str) -> Any:
        if not (inspect.isclass(obj) and issubclass(obj, base)):
            what = obj.__name__ if inspect.isclass(obj) else type(obj).__name__
            raise SparseNASError(f"{kind} {where} is {'class' if inspect.isclass(obj) else 'a'} {what}, not a subclass "
                                 f"of {base.__module__}.{base.__qualname__}")
        if inspect.isabstract(obj):
            missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
            raise SparseNASError(f"{kind} {where} ({obj.__name__}) does not implement: {missing}")
        if not isinstance(getattr(obj, "name", None), str) or not obj.name:
            raise SparseNASError(f"{kind} {where} ({obj.__name__}) has no `name`; set the class attribute "
                                 "name = \"...\" (the name stored in studies and architectures)")
        return obj

    return adopt
