"""`swiftdiffusion-operator`: runs the kopf operator for T2IWorkflow resources."""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

import kopf

from swiftdiffusion.operator import autoscaling, netpol


def _json(kind: type, name: str) -> Callable[[str], Any]:
    """An argparse type: JSON text holding a `kind` (a selector is an object, peers an array)."""
    def parse(text: str) -> Any:
        value = json.loads(text)
        if not isinstance(value, kind):
            raise ValueError(name)
        return value

    parse.__name__ = f"JSON {name}"  # argparse's error says "invalid JSON <name> value"
    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="swiftdiffusion-operator", description=__doc__)
    parser.add_argument("-n", "--namespace", action="append", default=[],
                        help="watch only this namespace (repeatable; default: all namespaces)")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="kopf liveness endpoint URL")
    parser.add_argument("--metrics-port", type=int, default=9090, help="Prometheus metrics port (0: off)")
    parser.add_argument("--workers", type=int, default=4, help="concurrent reconciles")
    parser.add_argument("--network-policies", action=argparse.BooleanOptionalAction, default=netpol.DEFAULT.enabled,
                        help="a NetworkPolicy per runtime pool (off: deletes those an earlier run made)")
    parser.add_argument("--monitoring-namespace-selector", type=_json(dict, "object"),
                        default=netpol.DEFAULT.monitoring_namespaces,
                        help="label selector (JSON) of the namespaces that may scrape the pools' metrics port")
    parser.add_argument("--base-pool-clients", type=_json(list, "array"), default=netpol.DEFAULT.base_clients,
                        help="NetworkPolicyPeers (JSON list) that may call a base pool's gRPC port "
                             "(default: every pod of its namespace; [] admits every source)")
    parser.add_argument("--prometheus-url", default=autoscaling.DEFAULT.prometheus_url,
                        help="Prometheus the pools' ScaledObjects query (KEDA reads it, not the operator)")
    parser.add_argument("--autoscaling-polling-interval", type=int, default=autoscaling.DEFAULT.polling_interval_seconds,
                        help="seconds between KEDA's reads of a pool's demand")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose)
    import swiftdiffusion.operator.handlers  # noqa: F401  (registers the handlers)

    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(metrics_port=args.metrics_port, workers=args.workers,
                       network=netpol.Settings(args.network_policies, args.monitoring_namespace_selector,
                                               args.base_pool_clients),
                       scaling=autoscaling.Settings(args.prometheus_url, args.autoscaling_polling_interval)),
    )


if __name__ == "__main__":
    main()
