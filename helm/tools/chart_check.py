"""Lint, render and validate the tidemark Helm chart without a cluster or a `helm` binary.

Run through `dev/helm-check`, which installs the pinned dependencies into .tidemark/helm-venv.

Rendering uses helm-python-sdk: Helm's own Go SDK (v4) as a shared library. `Chart.render` is
Helm's template engine run offline (what `helm template` runs: every template, hooks included,
`lookup` returning nothing); `lint` is `helm lint --strict` with the values file. Every rendered
manifest is then validated offline against the Kubernetes OpenAPI schemas of pinned versions
(kubernetes-validate, strict: unknown fields are errors), and the chart's invariants are checked
on the parsed objects.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import promql_parser
import yaml

RELEASE = "tidemark"
NAMESPACE = "tidemark"
COMPONENT = "app.kubernetes.io/component"
SECRETISH = re.compile(r"(?i)(password|passwd|secret|token|credential|sasl\.username|\.pem$)")


class Failures:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")

    def check(self, cond: bool, where: str, message: str) -> None:
        if not cond:
            self.add(where, message)


def load_values(path: Path) -> dict[str, Any]:
    # Helm's own YAML reading (numbers, nulls and merges behave as with `helm -f`).
    return helm.values_from_yaml(path.read_text())


def render(chart: Path, values: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Helm's template engine, offline: (template path, object) for every rendered document."""
    with helm.Chart.load(str(chart)) as ch:
        rendered = ch.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[tuple[str, dict[str, Any]]] = []
    for template, text in sorted(rendered.items()):
        name = template.rsplit("/", 1)[-1]
        if name.startswith("_") or name == "NOTES.txt" or not name.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ValueError(f"{template}: a document is not a mapping")
            docs.append((template, doc))
    return docs


def lint(chart: Path, values: dict[str, Any], kube_version: str) -> list[str]:
    result = helm.lint(str(chart), values, strict=True, kube_version=kube_version)
    problems = [str(e) for e in result.get("errors") or []]
    for m in result.get("messages") or []:
        # Helm's severities: 0 unknown, 1 info, 2 warning, 3 error. --strict fails on warnings.
        if int(m.get("severity", 0)) >= 2:
            problems.append(f"{m.get('path')}: {m.get('error')}")
    return problems


def config_toml(docs: list[tuple[str, dict[str, Any]]]) -> str:
    for _, d in docs:
        if d.get("kind") == "ConfigMap" and "helm.sh/hook" not in (
            d["metadata"].get("annotations") or {}
        ):
            return d["data"]["tidemark.toml"]
    raise ValueError("no tidemark ConfigMap rendered")


def pod_spec(d: dict[str, Any]) -> dict[str, Any] | None:
    kind = d.get("kind")
    if kind in ("Deployment", "Job"):
        return d["spec"]["template"]["spec"]
    if kind == "CronJob":
        return d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def component(d: dict[str, Any]) -> str:
    return (d["metadata"].get("labels") or {}).get(COMPONENT, "")


def check_part_env(f, name, container) -> None:
    """The pod of an Indexed Job reads its part from its completion index."""
    env = {e["name"]: e for e in container.get("env") or []}
    field = ((env.get("TIDEMARK_PART") or {}).get("valueFrom") or {}).get("fieldRef") or {}
    f.check(
        field.get("fieldPath") == "metadata.annotations['batch.kubernetes.io/job-completion-index']",
        name,
        "TIDEMARK_PART must come from the pod's job-completion-index annotation",
    )


def check_invariants(
    name: str, values: dict[str, Any], docs: list[tuple[str, dict[str, Any]]], f: Failures
) -> dict:
    stats: dict[str, Any] = {}
    toml_text = config_toml(docs)
    try:
        cfg = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as e:
        f.add(name, f"the rendered tidemark.toml is not TOML: {e}")
        return stats
    transport = cfg.get("transport", {})
    f.check(transport.get("kind") == "kafka", name, "[transport] kind must be \"kafka\"")
    max_partitions = max(
        [int(transport.get("partitions", 3))]
        + [int(n) for n in (transport.get("table_partitions") or {}).values()]
    )
    # Hook copy of the config must be the same text.
    for _, d in docs:
        ann = d["metadata"].get("annotations") or {}
        if d.get("kind") == "ConfigMap" and "helm.sh/hook" in ann:
            f.check(
                d["data"]["tidemark.toml"] == toml_text,
                name,
                "the topics-init hook ConfigMap differs from the main ConfigMap",
            )

    # No secret value inlined.
    kinds = [d.get("kind") for _, d in docs]
    f.check("Secret" not in kinds, name, "the chart must not render Secrets (values would be inlined)")
    url = cfg.get("source", {}).get("url", "")
    f.check(
        not re.match(r"^[a-z]+://[^/@]*:[^/@]*@", url), name, "config source.url holds a password"
    )

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                p = f"{path}.{k}" if path else k
                if SECRETISH.search(k) and not isinstance(v, (dict, list)):
                    f.add(name, f"tidemark.toml key {p} looks like an inlined credential")
                walk(v, p)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(cfg, "")

    captures = [d for _, d in docs if d.get("kind") == "Deployment" and component(d) == "capture"]
    applies = [d for _, d in docs if d.get("kind") == "Deployment" and component(d) == "apply"]
    backfills = [d for _, d in docs if d.get("kind") == "Job" and component(d) == "backfill"]
    reconciles = [d for _, d in docs if d.get("kind") == "CronJob" and component(d) == "reconcile"]
    controls = [d for _, d in docs if d.get("kind") == "Deployment" and component(d) == "control"]
    hooks = [d for _, d in docs if d.get("kind") == "Job" and component(d) == "topics-init"]

    f.check(len(captures) <= 1, name, "more than one capture Deployment")
    for d in captures:
        f.check(d["spec"].get("replicas") == 1, name, "capture replicas must be 1")
        f.check(
            (d["spec"].get("strategy") or {}).get("type") == "Recreate",
            name,
            "capture strategy must be Recreate (never two binlog readers)",
        )
    # The control worker: on unless control.enabled is false; exactly one, never two at once.
    control_on = (values.get("control") or {}).get("enabled", True) is not False
    f.check(
        len(controls) == (1 if control_on else 0),
        name,
        f"expected {1 if control_on else 0} control Deployment(s) (control.enabled), got {len(controls)}",
    )
    for d in controls:
        f.check(d["spec"].get("replicas") == 1, name, "control replicas must be 1")
        f.check(
            (d["spec"].get("strategy") or {}).get("type") == "Recreate",
            name,
            "control strategy must be Recreate (never two control workers)",
        )
        args = d["spec"]["template"]["spec"]["containers"][0].get("args") or []
        f.check(args[:2] == ["control", "serve"], name, "control must run `tidemark control serve`")
    stats["control"] = "1 worker" if controls else "off"
    # Every stage that opens the target (apply, reconcile, control's reconcile action) must see the
    # same SQLite file: the target volume mounted at the folder of target.path.
    target = cfg.get("target", {})
    if target.get("kind") == "sqlite":
        folder = str(Path(target.get("path", "/")).parent)
        for d in applies + reconciles + controls:
            spec = pod_spec(d) or {}
            mounts = {
                m["mountPath"]: m["name"]
                for c in spec.get("containers", [])
                for m in c.get("volumeMounts") or []
            }
            f.check(
                mounts.get(folder) == "target",
                f"{name} {d['kind']}/{d['metadata']['name']}",
                f"the sqlite target volume must be mounted at {folder}",
            )
    for d in applies:
        r = int(d["spec"].get("replicas", 1))
        stats["apply replicas"] = f"{r} <= {max_partitions} partitions"
        f.check(r <= max_partitions, name, f"apply replicas {r} > partitions {max_partitions}")
        if cfg.get("target", {}).get("kind") == "sqlite":
            f.check(r == 1, name, "the sqlite target allows one apply replica")
        ru = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        f.check(ru.get("maxSurge", 0) in (0, "0", "0%"), name, "apply must not surge above its replicas")
    for d in backfills:
        s = d["spec"]
        p = s["template"]["spec"]
        f.check(p.get("restartPolicy") == "OnFailure", name, "backfill restartPolicy must be OnFailure")
        f.check(int(s.get("backoffLimit", 6)) > 0, name, "backfill backoffLimit must allow restarts")
        container = p["containers"][0]
        args = container.get("args") or []
        if s.get("completionMode") == "Indexed":
            # One table in parts: each pod takes the part its completion index names.
            n = int(s.get("completions", 0))
            f.check(n > 1, name, "an Indexed backfill Job needs completions > 1")
            f.check(args.count("--table") == 1, name, "a backfill in parts names exactly one table")
            f.check(
                "--part" in args and args[args.index("--part") + 1] == f"$(TIDEMARK_PART)/{n}",
                name,
                f"an Indexed backfill Job must pass --part $(TIDEMARK_PART)/{n}",
            )
            check_part_env(f, name, container)
            stats["backfill parts"] = stats.get("backfill parts", 0) + n
        else:
            f.check(s.get("parallelism") == 1, name, "backfill Job parallelism must be 1")
        f.check(len(d["metadata"]["name"]) <= 63, name, f"Job name too long: {d['metadata']['name']}")
    stats["backfill Jobs"] = len(backfills)
    for d in reconciles:
        js = d["spec"]["jobTemplate"]["spec"]
        if js.get("completionMode") == "Indexed":
            # Drift in one part fails that part, never the others' comparisons.
            f.check(js.get("backoffLimitPerIndex") == 0, name, "an Indexed reconcile needs backoffLimitPerIndex 0")
            f.check("backoffLimit" not in js, name, "an Indexed reconcile must not cap the Job's backoffLimit")
        else:
            f.check(js.get("backoffLimit") == 0, name, "reconcile backoffLimit must be 0")
        f.check(
            js["template"]["spec"].get("restartPolicy") == "Never",
            name,
            "reconcile restartPolicy must be Never (exit 2 must fail the Job)",
        )
        f.check(d["spec"].get("concurrencyPolicy") == "Forbid", name, "reconcile must not overlap")
        f.check(len(d["metadata"]["name"]) <= 52, name, "CronJob name longer than 52")
        args = js["template"]["spec"]["containers"][0].get("args") or []
        stats["reconcile --repair"] = "--repair" in args
        if js.get("completionMode") == "Indexed":
            n = int(js.get("completions", 0))
            f.check(
                "--part" in args and args[args.index("--part") + 1] == f"$(TIDEMARK_PART)/{n}",
                name,
                f"an Indexed reconcile must pass --part $(TIDEMARK_PART)/{n}",
            )
            check_part_env(f, name, js["template"]["spec"]["containers"][0])
            stats["reconcile parts"] = n
    for d in hooks:
        ann = d["metadata"].get("annotations") or {}
        f.check(
            set((ann.get("helm.sh/hook") or "").split(",")) == {"pre-install", "pre-upgrade"},
            name,
            "topics init must be a pre-install,pre-upgrade hook",
        )
        args = d["spec"]["template"]["spec"]["containers"][0].get("args") or []
        f.check(args[:2] == ["topics", "init"], name, "the hook must run `tidemark topics init`")

    metrics_on = "metrics" in cfg
    for _, d in docs:
        spec = pod_spec(d)
        if spec is None:
            continue
        where = f"{name} {d['kind']}/{d['metadata']['name']}"
        psc = spec.get("securityContext") or {}
        f.check(psc.get("runAsNonRoot") is True, where, "pod runAsNonRoot must be true")
        f.check(
            (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
            where,
            "seccompProfile RuntimeDefault",
        )
        f.check(spec.get("automountServiceAccountToken") is False, where, "no service account token")
        for c in spec["containers"]:
            sc = c.get("securityContext") or {}
            f.check(sc.get("readOnlyRootFilesystem") is True, where, "readOnlyRootFilesystem")
            f.check(sc.get("allowPrivilegeEscalation") is False, where, "allowPrivilegeEscalation false")
            f.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), where, "drop ALL")
            f.check(bool((c.get("resources") or {}).get("requests")), where, "resource requests")
            mounts = {m["mountPath"] for m in c.get("volumeMounts") or []}
            f.check("/tmp" in mounts, where, "a writable /tmp emptyDir")
            f.check("/etc/tidemark" in mounts, where, "the config mount")
            for e in c.get("env") or []:
                if SECRETISH.search(e["name"]) or e["name"].endswith("_USER"):
                    f.check(
                        "value" not in e and "secretKeyRef" in (e.get("valueFrom") or {}),
                        where,
                        f"env {e['name']} must come from a Secret (secretKeyRef), never a value",
                    )
            if d["kind"] == "Deployment" and metrics_on:
                f.check("livenessProbe" in c and "readinessProbe" in c, where, "probes")
    return stats


# Kinds of the Prometheus Operator's CRDs: no Kubernetes API schema has them; their structure is
# checked by check_monitoring.
OPERATOR_API = "monitoring.coreos.com/v1"

# Metrics of other exporters the rules may use.
FOREIGN_METRICS = {"kube_job_status_failed"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (raises ValueError when it does not parse)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if type(node).__name__ == "VectorSelector" and node.name:
            names.add(node.name)
        for attr in ("lhs", "rhs", "expr", "args", "param", "vector_selector"):
            child = getattr(node, attr, None)
            if child is None:
                continue
            for c in child if isinstance(child, list) else [child]:
                if type(c).__module__ != "builtins":
                    walk(c)

    walk(promql_parser.parse(expr))
    return names


def check_monitoring(
    name: str, docs: list[tuple[str, dict[str, Any]]], f: Failures, used: set[str]
) -> dict[str, int]:
    """The ServiceMonitor scrapes the metrics port; every alert and dashboard panel has PromQL
    that parses, and names only metrics tidemark serves (or FOREIGN_METRICS). Adds the metric
    names to `used`."""
    rules = panels = 0

    def exprs_ok(where: str, expr: str) -> None:
        try:
            names = metric_names(expr)
        except ValueError as e:
            f.add(where, f"PromQL does not parse: {e}: {expr}")
            return
        f.check(bool(names), where, f"names no metric: {expr}")
        for n in names - FOREIGN_METRICS:
            f.check(n.startswith("tidemark_"), where, f"{n} is not a tidemark metric")
        used.update(names - FOREIGN_METRICS)

    for _, d in docs:
        kind, meta = d.get("kind"), d.get("metadata", {})
        where = f"{name} {kind}/{meta.get('name')}"
        if kind == "ServiceMonitor":
            eps = d["spec"].get("endpoints") or []
            f.check(
                any(e.get("port") == "metrics" and e.get("path") == "/metrics" for e in eps),
                where,
                "an endpoint on port `metrics`, path /metrics",
            )
        elif kind == "PrometheusRule":
            for g in d["spec"]["groups"]:
                for r in g["rules"]:
                    rules += 1
                    rw = f"{where} alert {r.get('alert')}"
                    f.check(bool(r.get("alert")), rw, "an alert name")
                    f.check(
                        bool((r.get("annotations") or {}).get("description")),
                        rw,
                        "a description saying what it means and what to do",
                    )
                    exprs_ok(rw, r["expr"])
        elif kind == "ConfigMap" and meta.get("name", "").endswith("-dashboard"):
            for key, text in d.get("data", {}).items():
                try:
                    dash = json.loads(text)
                except json.JSONDecodeError as e:
                    f.add(f"{where} {key}", f"not JSON: {e}")
                    continue
                for panel in dash.get("panels", []):
                    for t in panel.get("targets", []):
                        panels += 1
                        exprs_ok(f"{where} panel {panel.get('title')!r}", t["expr"])
    return {"alerts": rules, "dashboard queries": panels} if rules or panels else {}


def validate_schemas(
    name: str, docs: list[tuple[str, dict[str, Any]]], versions: list[str], f: Failures
) -> None:
    for template, d in docs:
        if d.get("apiVersion") == OPERATOR_API:
            continue
        for v in versions:
            try:
                kubernetes_validate.validate(d, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                f.add(
                    f"{name} {template} {d.get('kind')}/{d['metadata'].get('name')}",
                    f"Kubernetes {v} schema: {path}: {e.message}",
                )
            except kubernetes_validate.SchemaNotFoundError as e:
                f.add(f"{name} {template}", f"no schema for {d.get('kind')} in {v}: {e}")


def expected_error(path: Path) -> str:
    for line in path.read_text().splitlines():
        m = re.match(r"#\s*expect-error:\s*(.+)$", line)
        if m:
            return m.group(1).strip()
    raise SystemExit(f"{path}: a broken values file needs a '# expect-error: MESSAGE' line")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chart", type=Path, required=True)
    ap.add_argument("--values", type=Path, nargs="*", default=[])
    ap.add_argument("--broken", type=Path, nargs="*", default=[])
    ap.add_argument("--kube-version", action="append", default=[])
    ap.add_argument("--out", type=Path, help="write the rendered manifests under this folder")
    ap.add_argument("--render-config", nargs=2, metavar=("VALUES", "OUT"), type=Path)
    ap.add_argument(
        "--metrics-used",
        type=Path,
        help="write the tidemark metrics the alerts and the dashboard use, one per line",
    )
    args = ap.parse_args()
    versions = args.kube_version or ["1.29.0", "1.33.0"]

    if args.render_config:
        values_path, out = args.render_config
        try:
            docs = render(args.chart, load_values(values_path))
        except helm.HelmError as e:
            print(f"error: {values_path}: the chart does not render: {e}", file=sys.stderr)
            return 1
        out.write_text(config_toml(docs))
        print(f"wrote the tidemark.toml rendered from {values_path} to {out}")
        return 0

    f = Failures()
    summary: list[str] = []
    used: set[str] = set()
    for path in args.values:
        t0 = time.monotonic()
        name = path.name
        values = load_values(path)
        for v in versions[:1]:
            for p in lint(args.chart, values, v):
                f.add(f"{name} lint", p)
        try:
            docs = render(args.chart, values)
        except helm.HelmError as e:
            f.add(f"{name} render", str(e))
            summary.append(f"FAIL {name}: does not render")
            continue
        if args.out:
            d = args.out / path.stem
            d.mkdir(parents=True, exist_ok=True)
            (d / "manifests.yaml").write_text(yaml.safe_dump_all([doc for _, doc in docs], sort_keys=False))
            (d / "tidemark.toml").write_text(config_toml(docs))
        before = len(f.items)
        validate_schemas(name, docs, versions, f)
        stats = check_invariants(name, values, docs, f)
        stats.update(check_monitoring(name, docs, f, used))
        kinds: dict[str, int] = {}
        for _, doc in docs:
            kinds[doc["kind"]] = kinds.get(doc["kind"], 0) + 1
        status = "ok  " if len(f.items) == before else "FAIL"
        summary.append(
            f"{status} {name}: {len(docs)} manifests "
            f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}); "
            f"valid against Kubernetes {', '.join(versions)}; "
            + "; ".join(f"{k}: {v}" for k, v in stats.items())
            + f" [{time.monotonic() - t0:.1f}s]"
        )
    for path in args.broken:
        want = expected_error(path)
        try:
            render(args.chart, load_values(path))
        except helm.HelmError as e:
            ok = want in str(e)
            f.check(ok, f"{path.name}", f"rendering failed, but without {want!r}: {e}")
            summary.append(f"{'ok  ' if ok else 'FAIL'} {path.name}: refused as expected ({want})")
            continue
        f.add(path.name, f"rendered, but must fail with {want!r}")
        summary.append(f"FAIL {path.name}: rendered")

    if args.metrics_used:
        args.metrics_used.write_text("".join(f"{n}\n" for n in sorted(used)))
    print("\n".join(summary))
    if f.items:
        print(f"\n{len(f.items)} problem(s):", file=sys.stderr)
        for item in f.items:
            print(f"  - {item}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
