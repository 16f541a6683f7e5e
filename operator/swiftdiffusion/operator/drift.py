"""Does a live object still hold everything we apply? (Pure; decides whether to write at all.)

Server-side apply of an unchanged manifest changes nothing in etcd, but it is still a
PATCH round trip per object, and a restart of the operator would send one for every child
in the cluster. Comparing first makes an unchanged reconcile cost zero writes. The
comparison is "desired is contained in live": fields the API server defaulted or other
managers own (replicas under an autoscaler, extra labels) never count as drift, while a
hand edit of any field we set does. Dropping a field we used to set changes the manifest's
content hash (render.APPLIED_HASH), which then differs from the live annotation.
Empty maps and lists, false, 0 and "" match an absent field, as the API server omits them.
"""
from __future__ import annotations

from typing import Any

from kubernetes.utils import parse_quantity

LIST_KEYS = ("name", "uid", "key")


def _same_scalar(want: Any, have: Any) -> bool:
    if want == have and type(want) is type(have):
        return True
    if have is None:  # Go's omitempty drops false, 0 and "" on the way back
        return want in (False, 0, "")
    if isinstance(want, bool) or isinstance(have, bool):
        return False
    if isinstance(want, int | float) and isinstance(have, int | float):
        return want == have
    if not (isinstance(want, str) and isinstance(have, str)):
        return False
    try:  # resource quantities come back canonicalised ("0.5" -> "500m")
        return parse_quantity(want) == parse_quantity(have)
    except (ValueError, TypeError):
        return False


def _list_key(items: list[Any]) -> str | None:
    for key in LIST_KEYS:
        if items and all(isinstance(item, dict) and key in item for item in items):
            return key
    return None


def _contains_list(want: list[Any], have: Any) -> bool:
    if have is None:
        return not want
    if not isinstance(have, list):
        return False
    key = _list_key(want)
    if key is None:  # atomic or positional lists: same length, item by item
        return len(want) == len(have) and all(contains(w, h) for w, h in zip(want, have))
    by_key = {item.get(key): item for item in have if isinstance(item, dict)}
    return all(item[key] in by_key and contains(item, by_key[item[key]]) for item in want)


def contains(want: Any, have: Any) -> bool:
    """True when every field of `want` is present in `have` with an equal value."""
    if isinstance(want, dict):
        if have is None:
            return not want
        return isinstance(have, dict) and all(contains(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return _contains_list(want, have)
    return _same_scalar(want, have)
