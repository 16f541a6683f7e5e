"""Smoke tests proving the Kubernetes test bed is a real control plane."""
