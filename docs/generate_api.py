"""Writes docs/API.md, the API reference, from the docstrings.

Run: python docs/generate_api.py   (tests/test_docs.py checks it is current)
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import pathlib
import re
import types
import typing

import jax
import numpy as np

import couae_jax

API_PATH = pathlib.Path(__file__).with_name("API.md")
HEADER = """# couae-jax API reference

Generated from the docstrings by `python docs/generate_api.py`; do not edit.
Package version {version}. Public modules: {modules}.
Flax modules also take Flax's own `parent` and `name` fields, not listed.
"""


def _without_addresses(text: str) -> str:
  """Functions print with their address; keep the page reproducible."""
  return re.sub(r"<(?:function )?(\S+)(?: object)? at 0x[0-9a-f]+>", r"\1",
                text)


def _type_text(tp) -> str:
  """A type as its source spells it, the same with every JAX and Python.

  `repr` of a typing alias names the module a class happens to live in
  (`jax.Array` printed as `jax.jaxlib._jax.Array` with jax 0.10 and as
  `jax.Array` with 0.12), and Python 3.14 prints `Union[a, b]` as `a | b`.
  """
  if tp is Ellipsis:
    return "..."
  if tp is None or tp is type(None):
    return "None"
  if isinstance(tp, str):
    return tp
  if isinstance(tp, typing.ForwardRef):
    return tp.__forward_arg__
  if isinstance(tp, (list, tuple)):  # Callable's argument list
    return "[" + ", ".join(_type_text(t) for t in tp) + "]"
  origin, args = typing.get_origin(tp), typing.get_args(tp)
  if origin is typing.Union or origin is types.UnionType:
    if len(args) == 2 and type(None) in args:
      (inner,) = [a for a in args if a is not type(None)]
      return f"Optional[{_type_text(inner)}]"
    return "Union[" + ", ".join(_type_text(a) for a in args) + "]"
  if origin is not None:
    if origin is collections.abc.Callable and args:
      params, result = args[:-1], args[-1]
      params = params[0] if len(params) == 1 and params[0] is Ellipsis else (
          list(params[0]) if len(params) == 1 else list(params))
      return f"Callable[{_type_text(params)}, {_type_text(result)}]"
    inner = ", ".join(_type_text(a) for a in args)
    return f"{_type_text(origin)}[{inner}]" if args else _type_text(origin)
  if tp is jax.Array:  # jax 0.10's __qualname__ is `jaxlib._jax.Array`
    return "jax.Array"
  if isinstance(tp, type):
    if tp.__module__ in ("builtins", "typing", "collections.abc"):
      return tp.__qualname__
    for public, module in (("jax", jax), ("jax.numpy", jax.numpy),
                           ("np", np)):
      if getattr(module, tp.__name__, None) is tp:
        return f"{public}.{tp.__name__}"
    return f"{tp.__module__}.{tp.__qualname__}"
  return _without_addresses(repr(tp))


class _Spelled:
  """An annotation that `inspect` prints as the given text, unquoted."""

  def __init__(self, text: str):
    self.text = text

  def __repr__(self) -> str:
    return self.text


def _is_type_alias(obj) -> bool:
  return (typing.get_origin(obj) is not None
          or isinstance(obj, (typing.ForwardRef, types.UnionType)))


def _is_flax_module(obj) -> bool:
  return inspect.isclass(obj) and any(
      c.__module__.split(".")[0] == "flax" for c in obj.__mro__[1:])


def _signature(obj) -> str:
  """The signature, evaluated annotations spelled by `_type_text`."""
  try:
    signature = inspect.signature(obj)
  except (TypeError, ValueError):
    return ""
  def spelled(annotation):
    if annotation is signature.empty or isinstance(annotation, str):
      return annotation  # `from __future__ import annotations`: as written
    if isinstance(annotation, typing.ForwardRef):  # a NamedTuple's fields
      return annotation.__forward_arg__
    return _Spelled(_type_text(annotation))
  parameters = [
      p.replace(annotation=spelled(p.annotation))
      for p in signature.parameters.values()
      if not (_is_flax_module(obj) and p.name in ("parent", "name"))]
  result = spelled(signature.return_annotation)
  signature = signature.replace(parameters=parameters,
                                return_annotation=result)
  return _without_addresses(str(signature))


def _constant_text(obj) -> str:
  if _is_type_alias(obj):
    return _type_text(obj)
  return _without_addresses(repr(obj))


def _entry(module_name: str, name: str, obj) -> list[str]:
  qualified = f"{module_name}.{name}"
  if inspect.isclass(obj) or inspect.isfunction(obj):
    kind = "class" if inspect.isclass(obj) else "function"
    lines = [f"### `{qualified}{_signature(obj)}`", "", f"*{kind}*", ""]
  else:
    lines = [f"### `{qualified}`", "",
             f"*constant* = `{_constant_text(obj)}`", ""]
    return lines
  doc = inspect.getdoc(obj)
  if doc:
    lines += ["```text", doc, "```", ""]
  if inspect.isclass(obj):
    for method_name, method in vars(obj).items():
      if method_name.startswith("_") or not callable(method):
        continue
      # A method another library adds (flax.struct's `replace`) keeps its
      # signature; its docstring is that library's, and changes with it.
      ours = (getattr(method, "__module__", None) or "").startswith("couae_jax")
      method_doc = (inspect.getdoc(method) or "") if ours else ""
      lines += [f"- `{method_name}{_signature(method)}`"
                + (f": {method_doc.splitlines()[0]}" if method_doc else "")]
    lines.append("")
  return lines


def render() -> str:
  modules = [name for name in couae_jax.__all__
             if name not in ("__version__", "restore")]
  lines = [HEADER.format(version=couae_jax.__version__,
                         modules=", ".join(f"`{m}`" for m in modules))]
  lines += ["## `couae_jax.restore`", ""]
  lines += _entry("couae_jax", "restore", couae_jax.restore)
  for module_name in modules:
    module = importlib.import_module(f"couae_jax.{module_name}")
    lines += [f"## `couae_jax.{module_name}`", ""]
    summary = (inspect.getdoc(module) or "").split("\n\n")[0]
    lines += [summary, ""]
    for name in getattr(module, "__all__", []):
      lines += _entry(f"couae_jax.{module_name}", name, getattr(module, name))
  return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
  API_PATH.write_text(render())
  print(f"wrote {API_PATH}")
