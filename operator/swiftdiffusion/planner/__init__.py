"""Fleet planner: replay a request trace through a model of the fleet the operator builds.

Torch-free on purpose: a platform engineer plans on a laptop. The pools, their scaling
bounds and their callers come from the operator's own render and autoscaling functions.
"""
