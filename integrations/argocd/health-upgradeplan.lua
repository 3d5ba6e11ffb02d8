-- Argo CD health for nodeos.dev/UpgradePlan:
-- Progressing until the operator has seen the latest spec; Degraded when its Degraded
-- condition says so (failed nodes, an invalid spec, or a wait only a person can end, such as
-- NoNodesSelected) or the plan Failed; Suspended when Paused or a canary awaits approval;
-- Healthy when Completed; else Progressing.
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
local waiting = nil
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Degraded" and condition.status == "True" then
      hs.status = "Degraded"
      hs.message = condition.message or message
      return hs
    end
    if condition.type == "Waiting" and condition.status == "True" then
      waiting = condition.reason
    end
  end
end
if phase == "Failed" then
  hs.status = "Degraded"
elseif phase == "Completed" then
  local failed = 0
  if obj.status.counts ~= nil and obj.status.counts.failed ~= nil then
    failed = obj.status.counts.failed
  end
  if failed > 0 then
    hs.status = "Degraded"
  else
    hs.status = "Healthy"
  end
elseif phase == "Paused" or waiting == "CanaryAwaitingApproval" then
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
hs.message = message
return hs
