"""gpufleet's decision core: pure functions from (spec, observation, forecast, fleet, memory, now)
to a declarative Plan with a reason. No I/O, no clock, no asyncio, no client library (enforced
by import-linter); the operator and the simulator run exactly this code.

Modules, in the order a decision uses them:
  types      the contract: Replica, FleetState, Observation, ForecastSummary, PolicyMemory, Plan
  safety     missing/stale/NaN metrics -> safe mode (never scale down blind)
  fleet      counts of the fleet (interrupted and draining replicas are not capacity)
  capacity   need per signal (queue, latency, forecast, rate, min) and the worst of them
  stabilize  HPA-style windows, step limits, scale-down cooldown, history guard
  warmpool   warm standby pool sizing (fixed or auto) and promotions
  spotback   spot fallback with hysteresis
  split      on-demand/spot split, make-before-break, retirement order
  policy     GpufleetPolicy.decide, composing the above
"""
