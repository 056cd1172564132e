"""What the benchmark scripts share: run named measurements in order, print each as one JSON line,
and optionally write them all to a JSON file."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable


def run_named(cases: Iterable[tuple[str, Callable[[], dict]]], json_path: str | None = None,
              res: dict | None = None) -> dict:
    """``res`` (e.g. the machine's description) is extended and returned."""
    res = {} if res is None else res
    for name, fn in cases:
        res[name] = fn()
        print(name, json.dumps(res[name]), flush=True)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(res, f, indent=2)
    return res
