-- Argo CD health for nodeos.dev/NodeOSConfig, from its conditions:
-- Progressing until the operator has seen the latest spec; Degraded when its Degraded
-- condition is True or Ready is False for a reason other than drift being rolled out (e.g.
-- CredentialsUnusable); Healthy when Ready; else Progressing (drift being fixed).
local hs = {status = "Progressing", message = "waiting for the first inventory"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "the operator has not seen the latest spec yet"
  return hs
end
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Degraded" and condition.status == "True" then
    hs.status = "Degraded"
    hs.message = condition.message
    return hs
  end
end
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    if condition.status == "True" then
      hs.status = "Healthy"
    elseif condition.reason ~= nil and condition.reason ~= "NotInSync" then
      hs.status = "Degraded"
    else
      hs.status = "Progressing"
    end
    hs.message = condition.message
  end
end
return hs
