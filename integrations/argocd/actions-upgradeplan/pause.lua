-- Stop starting new nodes (nodes in flight finish). With Argo CD self-heal on, set
-- spec.paused in Git instead: self-heal puts the declared value back.
obj.spec.paused = true
return obj
