"""Per-kernel table of decode steps and prefills from Nsight Compute's raw CSV (bench/gpu/profile.sh).

Kernels are split into steps at each embedding gather (the first kernel of every forward), in the
order the engine bench ran them: one decode step per batch, then one prefill per prompt length.
Per step and kernel name: launches, time (ncu, each kernel alone), DRAM bytes, achieved TB/s, the
share of the step, and tensor-pipe activity. With --engine-json (the engine bench's JSON of the same
command), the graph-replayed step time and floor are printed beside the sum of kernel times.
"""
import argparse, csv, io, json, re, sys

ap = argparse.ArgumentParser()
ap.add_argument("csv")
ap.add_argument("--batches", default="")
ap.add_argument("--prompts", default="")
ap.add_argument("--engine-json")
ap.add_argument("--read-tbs", type=float, default=4.4, help="read roofline TB/s when no engine JSON is given")
a = ap.parse_args()

text = open(a.csv, encoding="utf-8", errors="replace").read()
start = text.find('"ID"')
if start < 0:
    sys.exit("no kernel rows in " + a.csv + ":\n" + text[:2000])
rows = list(csv.DictReader(io.StringIO(text[start:])))
rows = [r for r in rows if r.get("ID", "").isdigit()]  # drop the units row

def num(r, k):
    v = (r.get(k) or "0").replace(",", "")
    try:
        return float(v)
    except ValueError:
        return 0.0

def short(name):
    name = re.sub(r"\(.*$", "", name)            # drop the argument list
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"<.*>$", "<…>", name) if len(name) > 60 else name
    return name.split("::")[-1]

steps, cur = [], None
for r in rows:
    n = r["Kernel Name"]
    if "embed" in n.lower() and "gather" in n.lower():
        cur = []
        steps.append(cur)
    if cur is None:
        cur = []
        steps.append(cur)
    cur.append(r)

labels = [f"decode b={b}" for b in a.batches.split(",") if b] + [f"prefill {p}" for p in a.prompts.split(",") if p]
if len(labels) != len(steps):
    print(f"warning: {len(steps)} steps found, {len(labels)} expected; labels may be off\n")
    labels = (labels + [f"step {i}" for i in range(len(steps))])[: len(steps)]

eng = {}
read = a.read_tbs
if a.engine_json:
    j = json.load(open(a.engine_json))
    read = j.get("readTBs") or read
    for d in j.get("decode", []):
        eng[f"decode b={d['batch']}"] = (d.get("tokensGreedyGpuMs"), d.get("floorMs"))
    for p in j.get("prefill", []):
        eng[f"prefill {p['tokens']}"] = (p.get("gpuMs"), None)

print(f"# Kernel profile ({len(rows)} kernels; read roofline {read:.2f} TB/s)\n")
for label, ks in zip(labels, steps):
    tot = sum(num(r, "gpu__time_duration.sum") for r in ks) / 1e6  # ns -> ms
    byt = sum(num(r, "dram__bytes_read.sum") + num(r, "dram__bytes_write.sum") for r in ks)
    g, f = eng.get(label, (None, None))
    extra = f"; graph step {g:.3f} ms" if g else ""
    extra += f"; floor {f:.3f} ms" if f else ""
    print(f"## {label}: {len(ks)} kernels, sum {tot:.3f} ms, DRAM {byt/1e9:.2f} GB (byte floor {byt/read/1e9:.3f} ms){extra}\n")
    # profile.sh collects time and DRAM bytes only (one replay pass); the launch and tensor-pipe
    # columns appear when a run asked for those metrics too.
    extra_cols = bool(ks) and "launch__grid_size" in ks[0]
    if extra_cols:
        print("| kernel | launches | ms | share | GB | TB/s | % of read roofline | tensor pipe % | grid x block | regs |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    else:
        print("| kernel | launches | ms | share | GB | TB/s | % of read roofline |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    groups = {}
    for r in ks:
        groups.setdefault(short(r["Kernel Name"]), []).append(r)
    for name, rs in sorted(groups.items(), key=lambda kv: -sum(num(r, "gpu__time_duration.sum") for r in kv[1])):
        t = sum(num(r, "gpu__time_duration.sum") for r in rs) / 1e6
        b = sum(num(r, "dram__bytes_read.sum") + num(r, "dram__bytes_write.sum") for r in rs)
        tp = sum(num(r, "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed") * num(r, "gpu__time_duration.sum") for r in rs)
        tp /= max(1e-9, sum(num(r, "gpu__time_duration.sum") for r in rs))
        tbs = b / (t * 1e-3) / 1e12 if t else 0
        r0 = rs[0]
        row = f"| {name} | {len(rs)} | {t:.3f} | {100*t/max(tot,1e-9):.1f}% | {b/1e9:.3f} | {tbs:.2f} | {100*tbs/read:.0f}% |"
        if extra_cols:
            row += (f" {tp:.0f} | {int(num(r0,'launch__grid_size'))}x{int(num(r0,'launch__block_size'))} |"
                    f" {int(num(r0,'launch__registers_per_thread'))} |")
        print(row)
    print()
