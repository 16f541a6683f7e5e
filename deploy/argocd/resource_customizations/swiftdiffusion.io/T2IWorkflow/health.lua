-- Argo CD health check for swiftdiffusion.io/T2IWorkflow (docs/monitoring-gitops.md, "Argo CD").
-- It reads only what the operator writes to .status and calls no library function, so it
-- runs from argocd-cm without resource.customizations.useOpenLibs.

-- Argo CD hands integers over as numbers, or as strings where it decoded a json.Number;
-- arithmetic turns both into numbers without the string library.
local function number(value)
  if value == nil then
    return nil
  end
  return value + 0
end

-- The condition of the given type, or nil (a loop by index: ipairs belongs to a library).
local function condition(status, wanted)
  local conditions = status.conditions
  local i = 1
  while conditions[i] ~= nil do
    if conditions[i].type == wanted then
      return conditions[i]
    end
    i = i + 1
  end
  return nil
end

-- The oldest generation the status speaks for: top level and the Ready condition each carry one.
local function observedGeneration(status, ready)
  local observed = number(status.observedGeneration)
  if ready ~= nil and ready.observedGeneration ~= nil then
    local readyObserved = number(ready.observedGeneration)
    if observed == nil or readyObserved < observed then
      observed = readyObserved
    end
  end
  return observed
end

local function scaledToZero(pool)
  return pool ~= nil and pool.desiredReplicas ~= nil and number(pool.desiredReplicas) == 0
end

-- "base pool X, controlnet pool Y" for the pools whose desired replicas are 0; "" if none.
local function poolsAtZero(status)
  local names = ""
  if scaledToZero(status.basePool) then
    names = "base pool " .. (status.basePool.name or "?")
  end
  if scaledToZero(status.controlnetPool) then
    if names ~= "" then
      names = names .. ", "
    end
    names = names .. "controlnet pool " .. (status.controlnetPool.name or "?")
  end
  return names
end

local function health(status, message)
  return {status = status, message = message}
end

local function assess(obj)
  local status = obj.status
  if status == nil or status.conditions == nil then
    return health("Progressing", "waiting for the operator to report status")
  end
  local ready = condition(status, "Ready")
  local generation = number(obj.metadata.generation)
  local observed = observedGeneration(status, ready)
  if generation ~= nil and (observed == nil or observed < generation) then
    local seen = ""
    if observed ~= nil then
      seen = " (status is for generation " .. observed .. ")"
    end
    return health("Progressing", "waiting for the operator to observe generation " .. generation .. seen)
  end
  local degraded = condition(status, "Degraded")
  if degraded ~= nil and degraded.status == "True" then
    return health("Degraded", degraded.message or degraded.reason or "degraded")
  end
  if ready == nil or ready.status ~= "True" then
    return health("Progressing", (ready and ready.message) or "waiting for the operator to report readiness")
  end
  local atZero = poolsAtZero(status)
  if atZero ~= "" then
    return health("Suspended", "scaled to zero: " .. atZero)
  end
  return health("Healthy", ready.message or "all pools ready")
end

return assess(obj)
