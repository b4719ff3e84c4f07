"""Draw the Grafana dashboard of the Helm chart from samples of a live run's /metrics.

Usage: render.py DASHBOARD_JSON SAMPLES_JSONL OUT_PNG
       render.py --sample URL[,URL…] SAMPLES_JSONL STOP_FILE
           (scrape every URL every 2 s until STOP_FILE exists; one sample holds them all)

SAMPLES_JSONL holds one scrape per line: {"t": unix seconds, "body": the /metrics text}.
Each panel's queries are parsed with promql-parser and evaluated at every scrape's time over the
scrapes themselves: selectors, `sum`/`max` [by (...)], `rate`/`increase` over a range (from the
first and last sample in the window, counter resets added back; no extrapolation), `time()` and
arithmetic between vectors with the same labels or with scalars. That is the subset the
dashboard uses; anything else is an error, so a new panel cannot be drawn wrongly in silence.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import promql_parser  # noqa: E402

Labels = frozenset  # of (name, value)
LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_body(body: str) -> dict[tuple[str, Labels], float]:
    out = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        if not m:
            continue
        labels = Labels(LABEL.findall(m.group(3) or ""))
        try:
            out[(m.group(1), labels)] = float(m.group(4))
        except ValueError:
            pass
    return out


class Series:
    def __init__(self, scrapes: list[tuple[float, dict]]):
        self.scrapes = scrapes

    def at(self, i: int, name: str) -> dict[Labels, float]:
        return {lab: v for (n, lab), v in self.scrapes[i][1].items() if n == name}

    def window(self, i: int, name: str, seconds: float) -> dict[Labels, list[tuple[float, float]]]:
        t = self.scrapes[i][0]
        out: dict[Labels, list[tuple[float, float]]] = {}
        for ts, values in self.scrapes:
            if t - seconds <= ts <= t:
                for (n, lab), v in values.items():
                    if n == name:
                        out.setdefault(lab, []).append((ts, v))
        return out


def increase(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 2:
        return None
    total = 0.0
    for (_, a), (_, b) in zip(points, points[1:]):
        total += b - a if b >= a else b  # a reset: the counter started again from 0
    return total


def evaluate(node: Any, s: Series, i: int) -> Any:
    """An instant vector (dict labels -> value) or a float, at scrape i."""
    kind = type(node).__name__
    if kind == "VectorSelector":
        if list(node.matchers.matchers):
            raise ValueError("label matchers are not drawn")
        return s.at(i, node.name)
    if kind == "NumberLiteral":
        return float(node.val)
    if kind == "ParenExpr":
        return evaluate(node.expr, s, i)
    if kind == "Call":
        name = node.func.name
        if name == "time":
            return s.scrapes[i][0]
        if name in ("rate", "increase"):
            m = node.args[0]
            seconds = m.range.total_seconds()
            out = {}
            for lab, pts in s.window(i, m.vector_selector.name, seconds).items():
                inc = increase(pts)
                if inc is None:
                    continue
                span = pts[-1][0] - pts[0][0]
                out[lab] = inc if name == "increase" else (inc / span if span > 0 else 0.0)
            return out
        raise ValueError(f"function {name} is not drawn")
    if kind == "AggregateExpr":
        op = str(node.op)
        by = list(node.modifier.labels) if node.modifier else []
        inner = evaluate(node.expr, s, i)
        groups: dict[Labels, list[float]] = {}
        for lab, v in inner.items():
            key = Labels((k, val) for k, val in lab if k in by)
            groups.setdefault(key, []).append(v)
        if op == "sum":
            return {k: sum(v) for k, v in groups.items()}
        if op == "max":
            return {k: max(v) for k, v in groups.items()}
        raise ValueError(f"aggregation {op} is not drawn")
    if kind == "BinaryExpr":
        a, b = evaluate(node.lhs, s, i), evaluate(node.rhs, s, i)
        op = str(node.op)
        f = {
            "+": lambda x, y: x + y,
            "-": lambda x, y: x - y,
            "*": lambda x, y: x * y,
            "/": lambda x, y: x / y if y else float("nan"),
        }[op]
        if isinstance(a, float) and isinstance(b, float):
            return f(a, b)
        if isinstance(a, float):
            return {k: f(a, v) for k, v in b.items()}
        if isinstance(b, float):
            return {k: f(v, b) for k, v in a.items()}
        return {k: f(v, b[k]) for k, v in a.items() if k in b}
    raise ValueError(f"{kind} is not drawn")


def legend(fmt: str | None, lab: Labels) -> str:
    d = dict(lab)
    if fmt:
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: d.get(m.group(1), ""), fmt)
    return ", ".join(f"{k}={v}" for k, v in sorted(d.items())) or "value"


def sample(url: str, out_path: str, stop_file: str) -> None:
    import os
    import time
    import urllib.request

    with open(out_path, "w") as out:
        while not os.path.exists(stop_file):
            started = time.time()
            bodies = []
            for one in url.split(","):
                try:
                    bodies.append(urllib.request.urlopen(one, timeout=5).read().decode())
                except OSError:
                    pass  # not serving (yet, or any more: a job that ended)
            if bodies:
                out.write(json.dumps({"t": started, "body": "\n".join(bodies)}) + "\n")
                out.flush()
            time.sleep(max(0.0, 2.0 - (time.time() - started)))


def main() -> None:
    if sys.argv[1] == "--sample":
        sample(*sys.argv[2:5])
        return
    dashboard_path, samples_path, out_path = sys.argv[1:4]
    dashboard = json.load(open(dashboard_path))
    scrapes = []
    for line in open(samples_path):
        if line.strip():
            rec = json.loads(line)
            scrapes.append((rec["t"], parse_body(rec["body"])))
    s = Series(scrapes)
    t0 = scrapes[0][0]
    panels = dashboard["panels"]
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(16, 3.2 * rows), squeeze=False)
    fig.suptitle(
        f"{dashboard['title']} — drawn from {len(scrapes)} scrapes of a live run's /metrics",
        fontsize=14,
    )
    for ax, panel in zip(axes.flat, panels):
        ax.set_title(panel["title"], fontsize=10)
        for target in panel["targets"]:
            expr = promql_parser.parse(target["expr"])
            lines: dict[Labels, tuple[list[float], list[float]]] = {}
            for i in range(len(scrapes)):
                v = evaluate(expr, s, i)
                if isinstance(v, float):
                    v = {Labels(): v}
                for lab, value in v.items():
                    xs, ys = lines.setdefault(lab, ([], []))
                    xs.append(scrapes[i][0] - t0)
                    ys.append(value)
            for lab, (xs, ys) in sorted(lines.items(), key=lambda kv: sorted(kv[0])):
                ax.plot(xs, ys, label=legend(target.get("legendFormat"), lab), linewidth=1.4)
        ax.set_xlabel("seconds into the run", fontsize=8)
        ax.tick_params(labelsize=8)
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if unit:
            ax.set_ylabel(unit, fontsize=8)
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=7, loc="upper left", ncol=2)
        else:
            ax.text(0.5, 0.5, "no data in this run", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out_path, dpi=90)
    print(f"wrote {out_path}: {len(panels)} panels, {len(scrapes)} scrapes")


if __name__ == "__main__":
    main()
