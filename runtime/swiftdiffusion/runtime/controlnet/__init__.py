"""The ControlNet service's computation: control images, the exact residual forward, the LRU
cache of resident models and the engine that serves residual sessions."""
