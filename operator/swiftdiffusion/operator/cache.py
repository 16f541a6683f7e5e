"""The latest seen state of the operator's children, fed by watch events and by our own applies.

An informer-style read cache: a reconcile reads children from here instead of one GET
per child, and falls back to a GET on a miss (e.g. right after a restart, before the
initial listing has arrived), so a miss can never cause a write. Absence is cached too
(a deletion, or a 404), until an event or an apply shows the object again. A stale entry can at
worst cause one server-side apply that changes nothing; the watch event that follows
corrects it. A deletion leaves a tombstone at the deletion's revision, so an older body
(say, the response of an apply that raced the delete) cannot bring the object back.
"""
from __future__ import annotations

import threading
from typing import Any

Key = tuple[str, str, str]  # (kind, namespace, name)
TOMBSTONE = "__deleted__"


def _revision(body: dict[str, Any]) -> int | None:
    version = body["metadata"].get("resourceVersion", "")
    return int(version) if version.isdigit() else None


class ChildCache:
    def __init__(self) -> None:
        self._objects: dict[Key, dict[str, Any]] = {}
        self._lock = threading.Lock()  # written by the event loop, read by reconcile threads

    def __len__(self) -> int:
        return len(self._objects)

    def _store(self, kind: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (kind, meta["namespace"], meta["name"])
        with self._lock:
            held = self._objects.get(key)
            new, old = _revision(body), (_revision(held) if held else None)
            if held is None or new is None or old is None or new >= old:
                self._objects[key] = body

    def put(self, kind: str, body: dict[str, Any]) -> None:
        """Stores `body` unless a newer revision (or a later deletion) is already stored."""
        meta = body["metadata"]
        self._store(kind, {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}})

    def drop(self, kind: str, body: dict[str, Any]) -> None:
        """Records the deletion `body` (the last state a DELETED watch event carries)."""
        meta = body["metadata"]
        self._store(kind, {"metadata": {k: meta[k] for k in ("namespace", "name", "resourceVersion") if k in meta},
                           TOMBSTONE: True})

    def absent(self, kind: str, namespace: str, name: str) -> None:
        """Records a 404: known absent until any event or apply shows the object."""
        self._store(kind, {"metadata": {"namespace": namespace, "name": name, "resourceVersion": "0"},
                           TOMBSTONE: True})

    def lookup(self, kind: str, namespace: str, name: str) -> tuple[bool, dict[str, Any] | None]:
        """(known, object): known is False when the cache has no word on it; object is None if deleted."""
        with self._lock:
            body = self._objects.get((kind, namespace, name))
        if body is None:
            return False, None
        return True, None if body.get(TOMBSTONE) else body

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.lookup(kind, namespace, name)[1]
