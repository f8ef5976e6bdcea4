"""WADO-RS side by side: the scenarios of wado.py and wado_pixels.py against two or more servers, interleaved.

The data is made once and stored on every server. Then each scenario is measured on one server, then on the next,
and so on, ``--rounds`` times (the order reversed every other round), so that the drift of a shared, noisy machine
falls on every server alike; the table gives each server's median over the rounds and the ratio to the first
server (above 1: the first does better, whether the figure is a rate or a latency).

Example (compare_wado.sh starts both servers and runs this)::

    python benchmarks/side_by_side.py ours=http://127.0.0.1:8080/dicomweb orthanc=http://127.0.0.1:8042/dicom-web
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import wado
import wado_pixels
from wado import Figure, Scenario

NOT_SERVED = math.nan  # the value of a scenario the server answered with an error


def measure(scenario: Scenario) -> Figure:
    name, call = scenario
    try:
        return call()
    except SystemExit as failed:  # the server cannot do it (Orthanc and JPEG 2000): say so, measure the rest
        return Figure(NOT_SERVED, f"not served: {str(failed.code).rsplit(': ', 1)[-1][:60]}")


def ratio(first: Figure, other: Figure) -> str:
    """How many times better the first server does than the other (rates: first / other; latencies: other / first)."""
    if math.isnan(first.value) or math.isnan(other.value) or not first.value or not other.value:
        return "-"
    times = first.value / other.value if first.higher_is_better else other.value / first.value
    return f"{times:.2f}"


def median_figure(figures: list[Figure]) -> Figure:
    """The figure with the median value (the lower middle one of an even count), as measured."""
    served = sorted((f for f in figures if not math.isnan(f.value)), key=lambda f: f.value)
    return served[(len(served) - 1) // 2] if served else figures[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("servers", nargs="+", help="LABEL=URL of each DICOMweb root; the first is compared to the rest")
    parser.add_argument("--instances", type=int, default=500, help="CT instances in wado.py's study (default 500)")
    parser.add_argument("--count", type=int, default=40, help="CT instances per transfer syntax in wado_pixels.py")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each rate measurement (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each scenario per server (default 3)")
    args = parser.parse_args(argv)
    servers = [tuple(server.split("=", 1)) for server in args.servers]
    if any(len(server) != 2 for server in servers) or len(servers) < 2:
        parser.error("give two or more servers as LABEL=URL")

    study, pixels = wado.make_study(args.instances), wado_pixels.make_data(args.count)
    plans: dict[str, dict[str, Scenario]] = {}
    for label, url in servers:
        base = url.rstrip("/")
        measured = wado.scenarios(base, study, seconds=args.seconds)
        measured += wado_pixels.scenarios(base, pixels, seconds=args.seconds)
        plans[label] = {name: (name, call) for name, call in measured}
    labels = [label for label, _ in servers]
    names = list(plans[labels[0]])
    figures: dict[tuple[str, str], list[Figure]] = {(label, name): [] for label in labels for name in names}
    for number in range(args.rounds):
        order = labels if number % 2 == 0 else labels[::-1]
        for name in names:
            for label in order:
                figure = measure(plans[label][name])
                figures[label, name].append(figure)
                print(f"round {number + 1}, {name}, {label}: {figure.text}", file=sys.stderr, flush=True)

    header = ["scenario", *labels, *(f"{labels[0]} vs {label}" for label in labels[1:])]
    rows = []
    for name in names:
        medians = [median_figure(figures[label, name]) for label in labels]
        rows.append([name, *(f.text for f in medians), *(ratio(medians[0], other) for other in medians[1:])])
    print(f"median of {args.rounds} rounds; ratio above 1: {labels[0]} does better")
    print("| " + " | ".join(header) + " |")
    print("| --- " * len(header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
