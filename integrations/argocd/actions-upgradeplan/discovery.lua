-- Which nodeos.dev/UpgradePlan actions Argo CD offers, and when they are enabled.
local actions = {}
local paused = obj.spec ~= nil and obj.spec.paused == true
local phase = nil
local waiting = nil
if obj.status ~= nil then
  phase = obj.status.phase
  if obj.status.conditions ~= nil then
    for _, condition in ipairs(obj.status.conditions) do
      if condition.type == "Waiting" and condition.status == "True" then
        waiting = condition.reason
      end
    end
  end
end
actions["pause"] = {["disabled"] = paused}
actions["resume"] = {["disabled"] = not paused}
actions["retry"] = {["disabled"] = phase ~= "Failed"}
actions["approve"] = {["disabled"] = waiting ~= "CanaryAwaitingApproval"}
return actions
