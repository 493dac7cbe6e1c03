"""The official SDK's response models, read generically.

Every DaraModel class of `alibabacloud_ecs20140526` 7.11.8 is walked through
its `__init__` type hints; the wire name of each attribute is learnt from the
class's own `to_map()` (set one attribute, see which key appears), so
nothing here spells a field name by hand.
"""

import inspect
import typing

from alibabacloud_ecs20140526 import models as M
from darabonba.model import DaraModel

_SCALARS = {str: "str", int: "int", bool: "bool", float: "float"}


def _hints(cls):
    glob = dict(vars(inspect.getmodule(cls)))
    glob.update({"main_models": M, "List": typing.List, "Dict": typing.Dict, "Any": typing.Any})
    h = typing.get_type_hints(cls.__init__, globalns=glob)
    h.pop("return", None)
    return h


def _kind(t):
    """('str'|'int'|'bool'|'float'|'model'|'list'|'dict'|'any', element)."""
    origin = typing.get_origin(t)
    if origin in (list, typing.List):
        (elem,) = typing.get_args(t) or (typing.Any,)
        return "list", elem
    if origin in (dict, typing.Dict):
        return "dict", None
    if isinstance(t, type) and issubclass(t, DaraModel):
        return "model", t
    if t in _SCALARS:
        return _SCALARS[t], None
    return "any", None


def _sample(kind, elem):
    if kind == "model":
        return elem()
    if kind == "list":
        ek, ee = _kind(elem)
        return [_sample(ek, ee)]
    return {"str": "x", "int": 1, "bool": True, "float": 1.5, "dict": {"a": "b"}}.get(kind, "x")


def fields(cls):
    """[(attr, wire_key, kind, element)] of one model class."""
    out = []
    base = cls().to_map()
    for attr, t in _hints(cls).items():
        kind, elem = _kind(t)
        o = cls()
        setattr(o, attr, _sample(kind, elem))
        m = o.to_map()
        keys = [k for k in m if k not in base or m[k] != base[k]]
        if len(keys) != 1:
            raise RuntimeError(f"{cls.__name__}.{attr}: cannot tell its wire key ({keys})")
        out.append((attr, keys[0], kind, elem))
    return out


def body_class(action):
    return getattr(M, f"{action}ResponseBody")


# ---------------------------------------------------------------- checking

def _type_ok(kind, v):
    if kind == "str":
        return isinstance(v, str)
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "float":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "dict":
        return isinstance(v, dict)
    return True


def check(cls, obj, path=""):
    """Every key of `obj` against model `cls`: (keys checked, [problems])."""
    problems = []
    checked = 0
    if not isinstance(obj, dict):
        return 0, [f"{path or '/'}: expected an object for {cls.__name__}, got {type(obj).__name__}"]
    by_key = {k: (kind, elem) for _, k, kind, elem in fields(cls)}
    for k, v in obj.items():
        p = f"{path}.{k}" if path else k
        checked += 1
        if k not in by_key:
            problems.append(f"{p}: not in {cls.__name__}")
            continue
        kind, elem = by_key[k]
        if v is None:
            problems.append(f"{p}: null")
        elif kind == "model":
            c, pr = check(elem, v, p)
            checked += c
            problems += pr
        elif kind == "list":
            if not isinstance(v, list):
                problems.append(f"{p}: expected a list, got {type(v).__name__}")
                continue
            ek, ee = _kind(elem)
            for i, item in enumerate(v):
                if ek == "model":
                    c, pr = check(ee, item, f"{p}[{i}]")
                    checked += c
                    problems += pr
                elif not _type_ok(ek, item):
                    problems.append(f"{p}[{i}]: expected {ek}, got {type(item).__name__}")
        elif not _type_ok(kind, v):
            problems.append(f"{p}: expected {kind}, got {type(v).__name__} ({v!r})")
    return checked, problems


def roundtrip_keys(cls, obj):
    """Keys of `obj` the SDK drops: `from_map` then `to_map`, compared recursively."""
    return roundtrip_keys_of(obj, cls().from_map(obj).to_map())


def roundtrip_added(cls, obj):
    """Keys `from_map` then `to_map` has that `obj` lacks (a default the
    model fills in would hide a key the emulator forgot)."""
    return roundtrip_keys_of(cls().from_map(obj).to_map(), obj)


def roundtrip_keys_of(a, b):
    """Paths of dict keys in `a` that `b` lacks, recursively."""
    lost = []

    def walk(x, y, p):
        if isinstance(x, dict):
            for k, v in x.items():
                q = f"{p}.{k}" if p else k
                if not isinstance(y, dict) or k not in y:
                    lost.append(q)
                else:
                    walk(v, y[k], q)
        elif isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                lost.append(f"{p}: {len(x)} items against {len(y)}")
            for i, (m, n) in enumerate(zip(x, y)):
                walk(m, n, f"{p}[{i}]")

    walk(a, b, "")
    return lost


# ---------------------------------------------------------------- XML

def from_xml(cls, elem):
    """An XML element read as the JSON `cls` describes: repeated elements
    become lists where the model has a list, text becomes the model's type."""
    by_key = {k: (kind, e) for _, k, kind, e in fields(cls)}
    out = {}
    problems = []
    for child in elem:
        k = child.tag
        if k not in by_key:
            problems.append(f"<{k}>: not in {cls.__name__}")
            continue
        kind, e = by_key[k]
        if kind == "model":
            v, pr = from_xml(e, child)
            problems += pr
            out[k] = v
        elif kind == "list":
            ek, ee = _kind(e)
            if ek == "model":
                v, pr = from_xml(ee, child)
                problems += pr
            else:
                v = _scalar(ek, child.text or "", problems, k)
            out.setdefault(k, []).append(v)
        else:
            out[k] = _scalar(kind, child.text or "", problems, k)
    return out, problems


def _scalar(kind, text, problems, k):
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            problems.append(f"<{k}>{text}: not an int")
            return text
    if kind == "bool":
        if text not in ("true", "false"):
            problems.append(f"<{k}>{text}: not a bool")
        return text == "true"
    if kind == "float":
        return float(text)
    return text


# ---------------------------------------------------------------- maximal

def maximal(cls, tag="1"):
    """Every field present, lists of two, tags on everything; strings are
    `<Key>-<position>` so list items differ."""
    return {k: _max_value(kind, elem, k, tag) for _, k, kind, elem in fields(cls)}


def _max_value(kind, elem, k, tag):
    if kind == "model":
        return maximal(elem, tag)
    if kind == "list":
        ek, ee = _kind(elem)
        return [_max_value(ek, ee, k, f"{tag}{n}") for n in (1, 2)]
    if kind == "int":
        return int(tag) % 1000 + 1
    if kind == "bool":
        return True
    if kind == "float":
        return float(len(tag))
    if kind == "dict":
        return {"k": "v"}
    return f"{k}-{tag}"
