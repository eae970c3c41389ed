"""Writes docs/API.md, the API reference, from the docstrings.

Run: python docs/generate_api.py   (tests/test_docs.py checks it is current)
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import re

import couae_jax

API_PATH = pathlib.Path(__file__).with_name("API.md")
HEADER = """# couae-jax API reference

Generated from the docstrings by `python docs/generate_api.py`; do not edit.
Package version {version}. Public modules: {modules}.
"""


def _without_addresses(text: str) -> str:
  """Functions print with their address; keep the page reproducible."""
  return re.sub(r"<(?:function )?(\S+)(?: object)? at 0x[0-9a-f]+>", r"\1",
                text)


def _signature(obj) -> str:
  try:
    return _without_addresses(str(inspect.signature(obj)))
  except (TypeError, ValueError):
    return ""


def _entry(module_name: str, name: str, obj) -> list[str]:
  qualified = f"{module_name}.{name}"
  if inspect.isclass(obj) or inspect.isfunction(obj):
    kind = "class" if inspect.isclass(obj) else "function"
    lines = [f"### `{qualified}{_signature(obj)}`", "", f"*{kind}*", ""]
  else:
    lines = [f"### `{qualified}`", "",
             f"*constant* = `{_without_addresses(repr(obj))}`", ""]
    return lines
  doc = inspect.getdoc(obj)
  if doc:
    lines += ["```text", doc, "```", ""]
  if inspect.isclass(obj):
    for method_name, method in vars(obj).items():
      if method_name.startswith("_") or not callable(method):
        continue
      method_doc = inspect.getdoc(method) or ""
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
