"""A real Kubernetes control plane (etcd, apiserver, controller-manager, scheduler) with
kwok's fake nodes, built from pinned Go modules and run on loopback.

Standard library only: `scripts/testbed` runs it with the system Python.
"""
