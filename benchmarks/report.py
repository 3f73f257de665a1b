"""Turn pytest-benchmark JSON files into Markdown tables (Mpix/s and ratios), one per group.

    python benchmarks/report.py benchmarks/results/mode_filter.json [--baseline PATTERN]

Prints Markdown; `make bench` pastes it into benchmarks/RESULTS.md between the markers
<!-- bench:NAME --> and <!-- /bench:NAME --> (NAME = the JSON file's stem).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path


def machine_line(data: dict) -> str:
    mi = data.get("machine_info", {})
    cpu = mi.get("cpu", {})
    return (f"Machine: {cpu.get('brand_raw', mi.get('processor', '?'))}, "
            f"{cpu.get('count', '?')} cores, Python {mi.get('python_version', '?')}; "
            f"run {data.get('datetime', '?')[:16]}.")


def median_of(b: dict) -> float:
    """The median, times extra_info['scale'] for runs measured on a fraction of the work
    (their implementation name says so)."""
    return b["stats"]["median"] * b["extra_info"].get("scale", 1)


def tables(data: dict, baselines: list[str]) -> str:
    groups = defaultdict(list)
    for b in data["benchmarks"]:
        groups[b["group"] or b["name"]].append(b)
    out = [machine_line(data), ""]
    for group, items in sorted(groups.items()):
        items.sort(key=median_of)
        base = {}
        for pattern in baselines:
            for b in items:
                if pattern.lower() in b["extra_info"].get("impl", b["name"]).lower():
                    base[pattern] = median_of(b)
        peaks = any("peak_MB" in b["extra_info"] for b in items)
        out.append(f"**{group}** (median of rounds)\n")
        header = "| implementation | median | throughput |" + "".join(
            f" x {p} |" for p in base) + (" peak memory |" if peaks else "") + \
            "\n|---|---:|---:|" + "---:|" * (len(base) + peaks)
        out.append(header)
        for b in items:
            med = median_of(b)
            extra = b["extra_info"]
            if "pixels" in extra:
                rate = f"{extra['pixels'] / med / 1e6:,.0f} Mpix/s"
            elif "bytes" in extra:
                rate = f"{extra['bytes'] / med / 1e9:,.2f} GB/s"
            elif "flops" in extra:
                rate = f"{extra['flops'] / med / 1e9:,.0f} GFLOP/s"
            elif "values" in extra:
                rate = f"{extra['values'] / med / 1e9:,.2f} Gvalues/s"
            else:
                rate = ""
            ratios = "".join(f" {v / med:,.1f} |" for v in base.values())
            unit = f"{med * 1e3:,.3f} ms" if med < 1 else f"{med:,.2f} s"
            peak = ""
            if peaks:
                peak = f" {extra['peak_MB']:,.0f} MB |" if "peak_MB" in extra else " |"
            out.append(f"| {extra.get('impl', b['name'])} | {unit} | {rate} |{ratios}{peak}")
        for b in items:
            pairs = b["extra_info"].get("paired_ratios")
            if pairs:
                mid = statistics.median(pairs)
                extra = b["extra_info"]
                out.append(f"\nPaired: each round of {extra.get('impl', b['name'])} over the "
                           f"median of three calls of {extra.get('paired_with', 'the other')} "
                           "just before it: " + ", ".join(f"{r:,.1f}x" for r in pairs) +
                           f" (median {mid:,.1f}x)")
        out.append("")
    return "\n".join(out)


def paste(results_md: Path, name: str, text: str) -> None:
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    doc = results_md.read_text() if results_md.exists() else ""
    block = f"{begin}\n{text}\n{end}"
    if begin in doc:
        doc = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, doc,
                     flags=re.DOTALL)
    else:
        doc = doc.rstrip() + f"\n\n## {name}\n\n{block}\n"
    results_md.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("json", nargs="+", type=Path)
    ap.add_argument("--baseline", action="append", default=[],
                    help="implementation name fragment to report ratios against")
    ap.add_argument("--paste", type=Path, help="RESULTS.md to update between markers")
    args = ap.parse_args()
    for path in args.json:
        text = tables(json.loads(path.read_text()), args.baseline)
        if args.paste:
            paste(args.paste, path.stem, text)
        print(text)


if __name__ == "__main__":
    main()
