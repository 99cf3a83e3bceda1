"""A starter scoring script: init() runs once, run(data) per request (the Azure ML convention)."""

import json

weights = None


def init():
    global weights
    weights = [0.5, -0.25]


def run(data):
    rows = json.loads(data)["data"] if isinstance(data, str) else data["data"]
    return [sum(w * x for w, x in zip(weights, row, strict=True)) for row in rows]
