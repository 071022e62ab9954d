"""Reads scripts/compare.sh's JSON lines on stdin and prints a Markdown table:
for each workload and cluster size, cairn's median throughput, p50, p99 and
server CPU per operation (all members together) over the rounds, and each
as a ratio to etcd 3.4 and to etcd 3.5 (a throughput ratio above 1 and a
latency or CPU ratio below 1 favour cairn)."""

import json
import statistics
import sys
from collections import defaultdict

runs = defaultdict(list)
loads = {}
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    row = json.loads(line)
    result = row["result"]
    if row["run"].startswith("load-"):
        loads[row["server"]] = result
        loaded_keys = int(row["run"].removeprefix("load-"))
        continue
    runs[(row["run"], row["nodes"], row["server"])].append(result)


def median(results, pick):
    return statistics.median(pick(r) for r in results)


def figures(results):
    return (
        median(results, lambda r: r["rps"]),
        median(results, lambda r: r["latency_ms"]["percentiles"]["p50"]),
        median(results, lambda r: r["latency_ms"]["percentiles"]["p99"]),
        median(results, lambda r: r.get("extra", {}).get("server_cpu_us_per_op", 0)),
    )


def ratio(a, b):
    return f"{a / b:.2f}×" if b else "–"


print(
    "| workload | nodes | cairn ops/s | ×3.4 | ×3.5 | cairn p50 ms | ×3.4 | ×3.5 "
    "| cairn p99 ms | ×3.4 | ×3.5 | cairn CPU µs/op | ×3.4 | ×3.5 | errors |"
)
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
seen = list(dict.fromkeys((w, n) for (w, n, _) in runs))
for workload, nodes in seen:
    if (workload, nodes, "cairn") not in runs:
        continue
    c = figures(runs[(workload, nodes, "cairn")])
    e4 = figures(runs.get((workload, nodes, "etcd"), [])) if runs.get((workload, nodes, "etcd")) else (0, 0, 0, 0)
    e5 = figures(runs.get((workload, nodes, "etcd35"), [])) if runs.get((workload, nodes, "etcd35")) else (0, 0, 0, 0)
    errors = sum(r["errors"] for s in ("cairn", "etcd", "etcd35") for r in runs.get((workload, nodes, s), []))
    print(
        f"| {workload} | {nodes} | {c[0]:.0f} | {ratio(c[0], e4[0])} | {ratio(c[0], e5[0])} "
        f"| {c[1]:.2f} | {ratio(c[1], e4[1])} | {ratio(c[1], e5[1])} "
        f"| {c[2]:.2f} | {ratio(c[2], e4[2])} | {ratio(c[2], e5[2])} "
        f"| {c[3]:.0f} | {ratio(c[3], e4[3])} | {ratio(c[3], e5[3])} | {errors} |"
    )

if loads:
    print()
    print(f"| one member, {loaded_keys:,} keys | cairn | etcd 3.4 | etcd 3.5 | ×3.4 | ×3.5 |")
    print("|---|---|---|---|---|---|")
    for field, label in (("rss_mib", "RSS MiB"), ("disk_mib", "disk MiB"), ("restart_secs", "restart to serving, s")):
        c, e4, e5 = (loads.get(s, {}).get(field, 0) for s in ("cairn", "etcd", "etcd35"))
        print(f"| {label} | {c} | {e4} | {e5} | {ratio(c, e4)} | {ratio(c, e5)} |")
