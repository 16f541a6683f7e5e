"""The Argo CD health check as Argo CD runs it, and the files that ship it.

`health.lua` is the one source of the check; the argocd-cm patch and the chart's values
carry copies that the tests hold equal to it. `run_health` executes it in Lua 5.1 (the
language of Argo CD's gopher-lua) with nothing but the global `obj`: Argo CD opens no
string library for argocd-cm scripts, and our script promises to need no library at all.
"""
from __future__ import annotations

import copy
import pathlib
import re
from typing import Any

import yaml
from lupa.lua51 import LuaRuntime

REPO = pathlib.Path(__file__).resolve().parents[2]
GROUP, KIND = "swiftdiffusion.io", "T2IWorkflow"
CUSTOMIZATION = REPO / "deploy" / "argocd" / "resource_customizations" / GROUP / KIND
HEALTH_LUA = CUSTOMIZATION / "health.lua"
HEALTH_TEST = CUSTOMIZATION / "health_test.yaml"
CM_PATCH = REPO / "deploy" / "argocd" / "argocd-cm-patch.yaml"
CHART_VALUES = REPO / "charts" / "swiftdiffusion" / "values.yaml"
CM_KEY = f"resource.customizations.health.{GROUP}_{KIND}"
# The namespace captured objects are written with (the test bed's namespaces are random).
TESTDATA_NAMESPACE = "default"

# Loads the script, then runs it in an environment holding only `obj`: reading any other
# global (a library Argo CD might not open) or assigning one fails loudly.
_SANDBOX = """
return function(source, obj)
  local chunk, problem = loadstring(source, "=health.lua")
  if chunk == nil then
    error(problem, 0)
  end
  local env = setmetatable({obj = obj}, {
    __index = function(_, name)
      error("health.lua reads global '" .. tostring(name) .. "', which Argo CD does not give it", 2)
    end,
    __newindex = function(_, name)
      error("health.lua assigns global '" .. tostring(name) .. "'", 2)
    end,
  })
  return setfenv(chunk, env)()
end
"""

def run_health(obj: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    """Argo CD's verdict on `obj`: the table health.lua returns, as a dict."""
    runtime = LuaRuntime()
    run = runtime.execute(_SANDBOX)
    result = run(source if source is not None else HEALTH_LUA.read_text(), runtime.table_from(obj, recursive=True))
    if result is None or not hasattr(result, "items"):
        raise AssertionError(f"health.lua returned {result!r}, not a table")
    return dict(result.items())


def health_cases() -> list[dict[str, Any]]:
    """The cases of health_test.yaml, Argo CD's format: healthStatus and inputPath."""
    return yaml.safe_load(HEALTH_TEST.read_text())["tests"]


def load_testdata(input_path: str) -> dict[str, Any]:
    return yaml.safe_load((CUSTOMIZATION / input_path).read_text())


def _without_timestamps(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conditions]


def _renamespace(value: Any, namespace: str) -> Any:
    """Every string with the test bed's random namespace rewritten to TESTDATA_NAMESPACE."""
    if isinstance(value, dict):
        return {k: _renamespace(v, namespace) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamespace(v, namespace) for v in value]
    if isinstance(value, str):
        return re.sub(rf"\b{re.escape(namespace)}\b", TESTDATA_NAMESPACE, value)
    return value


def trim(live: dict[str, Any]) -> dict[str, Any]:
    """A live workflow as testdata: no managedFields, uid, resourceVersion or timestamps, and a
    fixed namespace, so a re-capture only changes what the operator changed."""
    obj = copy.deepcopy(live)
    meta = obj["metadata"]
    namespace = meta["namespace"]
    obj["metadata"] = {k: meta[k] for k in ("name", "namespace", "generation") if k in meta}
    if "conditions" in obj.get("status", {}):
        obj["status"]["conditions"] = _without_timestamps(obj["status"]["conditions"])
    return _renamespace(obj, namespace)


def status_shape(obj: dict[str, Any]) -> Any:
    """The field names and JSON types of `obj`'s status, values dropped; conditions keyed by type."""
    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: shape(item) for key, item in sorted(value.items())}
        if isinstance(value, list) and value and all(isinstance(i, dict) and "type" in i for i in value):
            return {f"type={item['type']}": shape(item) for item in value}
        if isinstance(value, list):
            return sorted({type(item).__name__ for item in value})
        return type(value).__name__

    return shape(obj.get("status", {}))
