"""The fleet: a test bed whose GPU nodes run real runtime processes.

kwok plays a node's kubelet with status updates only; here `kubelet.py` plays it for
real, starting each pod's container as a process on the pod's own address, and
`service_proxy.py` plays kube-proxy for ClusterIP Services. CoreDNS (built with the test
bed) answers the cluster's names from its EndpointSlices.
"""
