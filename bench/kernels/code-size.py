#!/usr/bin/env python3
"""Machine code of our CUDA kernels, measured on a machine without a GPU.

    python3 bench/kernels/code-size.py native/src/cuda/attention-decode-mma.cu [--filter RE] [--lines N]
                                       [--map] [--sass DIR] [-- extra nvcc flags]

Compiles one .cu file for sm_90a (nvcc -cubin -lineinfo, the engine's include paths and defines) and
prints each kernel's .text size in bytes (from the cubin's ELF section headers) with its registers
(ptxas -v). With --lines N it also disassembles the kernels that match --filter and prints the N
source lines whose instructions take the most bytes (the innermost inlined location), and with --map
the code in address order as runs of source lines (what a block fetches, in order).

Why: a kernel that runs once per layer fetches its code cold (the weights stream through L2 between
layers), so straight-line code on its critical path costs time (engine-gpu.md, ninth session: the
decode attention's merge, 4.5 us first pass, 1.8 us run again).

The disassembler: CUDA 13 on the development machine ships no nvdisasm. Debian 12's non-free
nvidia-cuda-toolkit (11.8) has one that knows sm_90 but not the ELF header layout CUDA 12.8+ writes
(ABI version 8, the SM in bits 8-15 of e_flags), so the tool disassembles a copy whose header says
ABI version 7 with the old flags (SM and virtual SM 90, 64-bit addresses); the code is unchanged.
Instructions newer than 11.8 may print under other names; sizes come from the section headers, not
from the disassembler. --fetch-nvdisasm downloads that package (apt-get download; the deb.debian.org
non-free component, no root needed for the download itself) into ~/.cache/microserve/nvdisasm.
"""
import argparse
import collections
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.expanduser("~/.cache/microserve/nvdisasm")


def sections(cubin):
    """(name, size) of every section of an ELF64 file."""
    b = open(cubin, "rb").read()
    shoff, = struct.unpack_from("<Q", b, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", b, 0x3A)
    heads = [struct.unpack_from("<IIQQQQIIQQ", b, shoff + i * shentsize) for i in range(shnum)]
    stroff = heads[shstrndx][4]
    out = []
    for h in heads:
        name = b[stroff + h[0]:b.index(b"\0", stroff + h[0])].decode()
        out.append((name, h[5]))
    return out


def old_header_copy(cubin, dst):
    """A copy whose ELF header an 11.8 nvdisasm reads (see the docstring)."""
    b = bytearray(open(cubin, "rb").read())
    flags, = struct.unpack_from("<I", b, 0x30)
    if b[8] >= 8:  # ABI 8: SM in bits 8-15
        sm = (flags >> 8) & 0xFF
        b[8] = 7
        struct.pack_into("<I", b, 0x30, sm | 0x500 | sm << 16)  # 64-bit addresses, unified textures
    open(dst, "wb").write(b)


def find_nvdisasm():
    for cand in [shutil.which("nvdisasm"), os.path.join(CACHE, "usr/bin/nvdisasm")]:
        if cand and os.path.exists(cand):
            return cand
    return None


def fetch_nvdisasm():
    os.makedirs(CACHE, exist_ok=True)
    tmp = tempfile.mkdtemp()
    src = os.path.join(tmp, "nonfree.list")
    open(src, "w").write("deb http://deb.debian.org/debian bookworm non-free\n")
    opts = ["-o", f"Dir::Etc::SourceList={src}", "-o", "Dir::Etc::SourceParts=-", "-o",
            f"Dir::State::Lists={tmp}/lists", "-o", f"Dir::Cache={tmp}/cache", "-o", "Debug::NoLocking=1"]
    os.makedirs(f"{tmp}/lists/partial", exist_ok=True)
    subprocess.run(["apt-get", *opts, "update", "-qq"], check=True)
    subprocess.run(["apt-get", *opts, "download", "nvidia-cuda-toolkit"], check=True, cwd=tmp)
    deb = [f for f in os.listdir(tmp) if f.endswith(".deb")][0]
    subprocess.run(["dpkg", "-x", os.path.join(tmp, deb), CACHE], check=True)
    shutil.rmtree(tmp)
    print("nvdisasm:", os.path.join(CACHE, "usr/bin/nvdisasm"))


def demangle(names):
    try:
        r = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
        return r.stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return names


def short(name):  # drop the namespaces and the (anonymous namespace) noise of a demangled kernel
    name = re.sub(r"(ms::cuda::)?\(anonymous namespace\)::", "", name)
    return re.sub(r"\([^()]*\)$", "", name)


def per_line(sass_text, kernel, top, show_map):
    """Bytes per innermost source line of one kernel's disassembly (nvdisasm -g)."""
    body, on = [], False
    for ln in sass_text.splitlines():
        if ln.startswith("//----"):
            on = f".text.{kernel} " in ln + " "
        elif on:
            body.append(ln)
    cur, after_ins, count, runs = None, True, collections.Counter(), []
    for ln in body:
        m = re.search(r'//## File "([^"]+)", line (\d+)', ln)
        if m:
            if after_ins:  # the first location after instructions is the innermost
                cur = (os.path.relpath(m.group(1), ROOT), int(m.group(2)))
            after_ins = False
            continue
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/", ln)
        if m:
            after_ins = True
            count[cur] += 16
            a = int(m.group(1), 16)
            if runs and runs[-1][0] == cur:
                runs[-1][2] = a
            else:
                runs.append([cur, a, a])
    for (loc, n) in count.most_common(top):
        print(f"    {n:6d} B  {loc[0]}:{loc[1]}" if loc else f"    {n:6d} B  (no line)")
    if show_map:  # runs of at least 256 bytes, in address order
        for loc, a, b in runs:
            if b - a + 16 >= 256:
                print(f"    {a:6x}-{b + 16:6x} {b - a + 16:6d} B  " + (f"{loc[0]}:{loc[1]}" if loc else "(no line)"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("source", nargs="?")
    ap.add_argument("--filter", default="", help="regular expression on the demangled kernel name")
    ap.add_argument("--lines", type=int, default=0, help="print the N source lines with the most code")
    ap.add_argument("--map", action="store_true", help="print the code in address order, by source line")
    ap.add_argument("--sass", help="keep the cubin and the disassembly in this directory")
    ap.add_argument("--fetch-nvdisasm", action="store_true", help="download Debian's nvdisasm 11.8 first")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # extra nvcc flags
    a = ap.parse_args(argv[:len(argv) - len(extra) - (1 if "--" in argv else 0)])
    if a.fetch_nvdisasm:
        fetch_nvdisasm()
    if not a.source:
        return
    work = a.sass or tempfile.mkdtemp()
    os.makedirs(work, exist_ok=True)
    cubin = os.path.join(work, os.path.basename(a.source) + ".cubin")
    cmd = ["nvcc", "-std=c++17", "-O3", "-lineinfo", "-cubin", "-gencode", "arch=compute_90a,code=sm_90a",
           "-DMS_CUDA_WGMMA", "-Xptxas", "-v"] + [f"-I{os.path.join(ROOT, d)}" for d in
                                                    ("native/src", "native/src/cuda", "bench/gpu", "test/cuda")]
    r = subprocess.run(cmd + extra + [a.source, "-o", cubin], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr)
    regs, fn = {}, None
    for ln in r.stderr.splitlines():
        m = re.search(r"Compiling entry function '(\S+)'", ln)
        if m:
            fn = m.group(1)
        m = re.search(r"Used (\d+) registers", ln)
        if m and fn:
            regs[fn] = int(m.group(1))
    texts = [(n[len(".text."):], s) for n, s in sections(cubin) if n.startswith(".text.")]
    names = demangle([n for n, _ in texts])
    rows = [(s, short(d), n) for (n, s), d in zip(texts, names) if re.search(a.filter, d)]
    rows.sort(key=lambda x: -x[0])
    for s, d, n in rows:
        print(f"{s:7d} B  {regs.get(n, '?'):>3} regs  {d}")
    if not (a.lines or a.map):
        return
    nvd = find_nvdisasm()
    if not nvd:
        sys.exit("no nvdisasm: run with --fetch-nvdisasm once (see the docstring)")
    old = cubin + ".abi7"
    old_header_copy(cubin, old)
    d = subprocess.run([nvd, "-c", "-g", old], capture_output=True, text=True)
    if d.returncode != 0:
        sys.exit(d.stderr)
    if a.sass:
        open(os.path.join(work, os.path.basename(a.source) + ".sass"), "w").write(d.stdout)
    for s, dn, n in rows:
        print(f"\n{dn}: {s} B")
        per_line(d.stdout, n, a.lines, a.map)


if __name__ == "__main__":
    main()
