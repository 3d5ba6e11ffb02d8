-- Start nodes again (see pause about self-heal).
obj.spec.paused = false
return obj
