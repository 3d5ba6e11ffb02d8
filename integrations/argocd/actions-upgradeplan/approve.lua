-- Release a canary that waits for approval; the operator consumes the annotation.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["nodeos.dev/approve"] = "true"
return obj
