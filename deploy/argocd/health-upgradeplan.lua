-- Argo CD health for nodeos.dev/UpgradePlan: Healthy when Completed without failures,
-- Degraded when Failed (or Completed with failed nodes), Suspended when Paused, else Progressing.
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator"
  return hs
end
local phase = obj.status.phase
local message = obj.status.message or phase
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "the operator has not seen the latest spec yet"
  return hs
end
if phase == "Completed" then
  local failed = 0
  if obj.status.counts ~= nil and obj.status.counts.failed ~= nil then
    failed = obj.status.counts.failed
  end
  if failed > 0 then
    hs.status = "Degraded"
  else
    hs.status = "Healthy"
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
elseif phase == "Paused" then
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
hs.message = message
return hs
