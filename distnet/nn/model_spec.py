"""Your own model by name: ``path/to/file.py:function`` or ``package.module:function``.

The function takes ``(input_shape, num_classes)`` and returns a ``Sequential``; it is how the
command line (``--model my_models.py:build``) and a checkpoint's meta name a model that is
not built in.  Loading the file runs its code, like ``python file.py`` would: name only files
you trust.  Every failure says what went wrong in one line naming the file or module.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

from ..errors import UserError


def _split(spec: str) -> tuple[str, str]:
    where, _, name = str(spec).rpartition(":")
    if not where or not name.isidentifier():
        raise UserError(f"{spec}: a model spec is path/to/file.py:function or package.module:function")
    return where, name


def _load_file(path: Path):
    if not path.is_file():
        raise UserError(f"{path}: model file not found")
    module_name = f"distnet_user_model_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise UserError(f"{path}: cannot load this file as Python")
    module = importlib.util.module_from_spec(loader_spec)
    sys.path.insert(0, str(path.parent.resolve()))  # its own helper modules beside it import too
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - anything the user's file raises is the user's error
        raise UserError(f"{path}: loading the file raised {type(exc).__name__}: {' '.join(str(exc).split())}") from None
    finally:
        sys.path.remove(str(path.parent.resolve()))
    return module


def resolve_builder(spec: str):
    """The function ``spec`` names (UserError naming the file/module when there is none)."""
    where, name = _split(spec)
    if where.endswith(".py") or "/" in where:
        source = where
        module = _load_file(Path(where))
    else:
        source = where
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise UserError(f"{where}: cannot import model module: {exc}") from None
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"{where}: importing the module raised {type(exc).__name__}: {exc}") from None
    fn = getattr(module, name, None)
    if fn is None:
        found = sorted(k for k, v in vars(module).items() if inspect.isfunction(v) and not k.startswith("_"))
        raise UserError(f"{source}: no function {name!r} (functions there: {', '.join(found) or 'none'})")
    if not callable(fn):
        raise UserError(f"{source}: {name!r} is a {type(fn).__name__}, not a function")
    return fn


def _accepts(fn, keyword: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == keyword or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def call_builder(spec: str, fn, input_shape, num_classes: int, *, seed: int, dtype, args: dict):
    """``fn(input_shape, num_classes, [seed=], [dtype=], **args)``, checked to be a model."""
    kwargs = dict(args)
    for keyword, value in (("seed", seed), ("dtype", dtype)):
        if keyword not in kwargs and _accepts(fn, keyword):
            kwargs[keyword] = value
    try:
        model = fn(input_shape, num_classes, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's builder failed: say so in one line
        raise UserError(f"{spec}: the model function raised {type(exc).__name__}: "
                        f"{' '.join(str(exc).split())}") from None
    if not (hasattr(model, "flat_params") and hasattr(model, "flat_grads") and hasattr(model, "backward")):
        raise UserError(f"{spec}: the model function returned {type(model).__name__}, not a model "
                        f"(a distnet.nn.Sequential)")
    return model
