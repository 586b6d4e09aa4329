"""Read the tensors of a pickled PyTorch model without running code from the file.

``torch.save(model)`` pickles the whole module tree: its classes by name
(``timm.models.efficientnet.EfficientNet``, ``torch.nn.modules.conv.Conv2d``)
and its tensors through :mod:`torch._utils` rebuild functions. Unpickling it
normally imports those classes (so it needs the timm version that wrote it)
and calls whatever the pickle names, which is how a pickle runs code.

This reader calls nothing the file names, except its own stand-ins:

* the tensor rebuild functions and storage types are replaced by local
  functions that cut each tensor out of its storage bytes in the zip archive;
* ``collections.OrderedDict`` and ``set`` are real (plain containers);
* a class from a model library (``torch``, ``timm``, ...) becomes an inert
  :class:`Stub` that only records the state it is given, so the module tree can
  be walked for its ``_parameters`` and ``_buffers``;
* any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...)
  stops the reading with a :class:`~signfer.errors.SignferError` before it is
  looked up, let alone called.

The archive layout is torch's zip format (PyTorch >= 1.6): ``<name>/data.pkl``
holds the pickle and ``<name>/data/<key>`` the raw bytes of each storage.

>>> tensors = read_torch_pickle("enet_b0_7.pt")  # doctest: +SKIP
>>> tensors["classifier.0.weight"].shape         # doctest: +SKIP
torch.Size([7, 1280])
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from collections.abc import Callable
from typing import Any

import torch

from signfer.errors import SignferError

#: Packages whose classes may appear in a pickled model; they become inert stubs.
MODEL_PACKAGES = ("torch", "timm", "torchvision", "geffnet", "efficientnet_pytorch", "functools")

#: Storage class names (``torch.FloatStorage``) -> dtype.
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class Stub:
    """An inert stand-in for a class named in the pickle: it records, never runs.

    ``Stub`` subclasses carry the global's name (``_global``); calling one (the
    pickle's REDUCE) or creating one (NEWOBJ) makes an instance that keeps the
    arguments, and ``__setstate__`` keeps the state (a module's ``__dict__``).
    """

    _global = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Stub:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args
        self._state: Any = None
        self._items: dict = {}

    def __setstate__(self, state: Any) -> None:
        self._state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEM(S) on a dict subclass
        self._items[key] = value

    def append(self, value: Any) -> None:  # APPEND(S) on a list subclass
        self._items[len(self._items)] = value

    def extend(self, values: Any) -> None:
        for v in values:
            self.append(v)

    def __repr__(self) -> str:
        return f"<stub of {self._global}>"


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *_: Any) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2``: a view of the storage, bounds checked by torch."""
    try:
        return storage.as_strided(tuple(size), tuple(stride), int(offset))
    except (RuntimeError, TypeError, ValueError) as e:
        raise SignferError(f"a tensor does not fit its storage ({e})") from None


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    """``torch._utils._rebuild_parameter(_with_state)``: the tensor itself is all we need."""
    return data


#: The only callables a pickle may reach, by (module, name).
_REAL: dict[tuple[str, str], Callable] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` whose globals are tensor rebuilders, containers or inert stubs.

    ``persistent_load`` (storages) is supplied by the caller.
    """

    def __init__(self, file, persistent_load: Callable[[Any], Any] | None = None):
        super().__init__(file, encoding="utf-8")
        self._stubs: dict[str, type] = {}
        self._persistent_load = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _REAL:
            return _REAL[key]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if module.split(".")[0] in MODEL_PACKAGES and "." not in name:
            qualified = f"{module}.{name}"
            if qualified not in self._stubs:
                self._stubs[qualified] = type(name, (Stub,), {"_global": qualified})
            return self._stubs[qualified]
        raise SignferError(f"the pickle names {module}.{name}, which signfer's reader refuses "
                           "(it rebuilds tensors and model classes only, and runs nothing)")

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent_load is None:
            raise SignferError("the pickle refers to external data that is not in the file")
        return self._persistent_load(pid)


def safe_loads(data: bytes, persistent_load: Callable[[Any], Any] | None = None) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; any failure is a :class:`SignferError`."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), persistent_load).load()
    except SignferError:
        raise
    except Exception as e:  # a damaged pickle raises anything from EOFError to UnpicklingError
        raise SignferError(f"damaged pickle ({type(e).__name__}: {e})") from None


def _archive(path: str | os.PathLike) -> tuple[zipfile.ZipFile, str]:
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise SignferError(
            f"{path}: not a PyTorch zip archive ({e}); signfer reads files saved by torch.save "
            "with PyTorch 1.6 or later") from None
    names = z.namelist()
    pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        z.close()
        if any(n.endswith("constants.pkl") for n in names):
            raise SignferError(f"{path}: a TorchScript archive (it holds code), not a pickled model")
        raise SignferError(f"{path}: not a torch.save archive (no <name>/data.pkl inside)")
    prefix = pkls[0][: -len("data.pkl")]
    if any(n == f"{prefix}constants.pkl" for n in names):
        z.close()
        raise SignferError(f"{path}: a TorchScript archive (it holds code), not a pickled model")
    order = f"{prefix}byteorder"
    if order in names and z.read(order).decode(errors="replace").strip() != "little":
        z.close()
        raise SignferError(f"{path}: tensors stored big-endian; signfer reads little-endian archives only")
    return z, prefix


def read_pickled_model(path: str | os.PathLike) -> Any:
    """The object tree that ``torch.save`` wrote, classes as :class:`Stub`, tensors real."""
    z, prefix = _archive(path)
    storages: dict[str, torch.Tensor] = {}

    def persistent_load(pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise SignferError(f"{path}: unknown storage reference {str(pid)[:80]}")
        dtype, key, numel = pid[1].dtype, str(pid[2]), pid[4]
        if key not in storages:
            try:
                raw = z.read(f"{prefix}data/{key}")
            except KeyError:
                raise SignferError(f"{path}: storage {key} is missing from the archive") from None
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise SignferError(f"{path}: damaged archive ({e})") from None
            itemsize = torch.empty((), dtype=dtype).element_size()
            if not isinstance(numel, int) or len(raw) != numel * itemsize:
                raise SignferError(f"{path}: storage {key} has {len(raw)} bytes, expected {numel} x {itemsize}")
            storages[key] = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return storages[key]

    try:
        data = z.read(f"{prefix}data.pkl")
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise SignferError(f"{path}: damaged archive ({e})") from None
    try:
        return safe_loads(data, persistent_load)
    except SignferError as e:
        msg = str(e)
        raise SignferError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    finally:
        z.close()


def module_tensors(root: Any) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of a pickled module tree, by attribute path.

    ``root`` is what :func:`read_pickled_model` returns: a module (a
    :class:`Stub` whose state holds ``_parameters``, ``_buffers`` and
    ``_modules``) or a plain state dict (name -> tensor).
    """
    if isinstance(root, dict) and root and all(isinstance(v, torch.Tensor) for v in root.values()):
        return dict(root)
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def walk(obj: Any, prefix: str) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        state = obj._state if isinstance(obj, Stub) else None
        if not isinstance(state, dict):
            return
        skip = state.get("_non_persistent_buffers_set") or set()
        for kind in ("_parameters", "_buffers", "_modules"):
            if not isinstance(state.get(kind) or {}, dict):
                raise SignferError(f"{prefix or 'the module'}: {kind} is a {type(state[kind]).__name__}, "
                                   "not a mapping; not a PyTorch module")
        for kind in ("_parameters", "_buffers"):
            for name, t in dict(state.get(kind) or {}).items():
                if t is None or (kind == "_buffers" and name in skip):
                    continue
                if not isinstance(t, torch.Tensor):
                    raise SignferError(f"{prefix}{name} is not a tensor but {type(t).__name__}")
                out[prefix + name] = t
        for name, child in dict(state.get("_modules") or {}).items():
            if child is not None:
                walk(child, f"{prefix}{name}.")

    walk(root, "")
    if not out:
        raise SignferError("the pickle holds neither a PyTorch module nor a state dict of tensors")
    return out


def read_torch_pickle(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors (state-dict names) of a model saved whole or as a state dict by ``torch.save``."""
    root = read_pickled_model(path)
    try:
        return module_tensors(root)
    except SignferError as e:
        raise SignferError(f"{path}: {e}") from None
