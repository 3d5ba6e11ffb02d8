-- Retry a Failed plan: the operator consumes the annotation and starts its failed nodes again.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["nodeos.dev/retry"] = "true"
return obj
