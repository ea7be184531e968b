#!/usr/bin/python3
"""Summarise `perf report --children --sort symbol -g none --stdio` output.

Usage: perf_summary.py REPORT_TXT TITLE > fragment.md

Prints a markdown fragment: the process's CPU samples split by where the
code lives (self time), the inclusive share of a few paths that explain a
proxy's cost, and the program's own functions with the most inclusive time.
"""
import re
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*([\d.]+)%\s+([\d.]+)%\s+\[([.k])\]\s+(\S+)")

INCLUSIVE = [
    (("ksys_write", "__sys_sendto"), "sending (write/sendto), incl. the kernel's loopback delivery to the peer"),
    (("ksys_read", "__sys_recvfrom"), "receiving (read/recvfrom)"),
    (("__x64_sys_epoll_pwait", "__x64_sys_epoll_wait"), "waiting for sockets (epoll), incl. the context switch"),
    (("__do_sys_io_uring_enter", "__x64_sys_io_uring_enter"), "io_uring_enter: the round's sends, receives and the wait, incl. the context switch"),
    (("__x64_sys_futex",), "futex(2): waking and parking runtime threads"),
    (("__x64_sys_nanosleep",), "nanosleep(2): the runtime's sysmon thread"),
    (("runtime.findRunnable",), "Go scheduler looking for work (runtime.findRunnable)"),
    (("runtime.sysmon",), "Go runtime monitor thread (runtime.sysmon)"),
    (("runtime.gcBgMarkWorker",), "garbage collector (runtime.gcBgMarkWorker)"),
    (("runtime.mallocgc",), "allocation (runtime.mallocgc)"),
]


def category(kind, sym):
    if kind == "k":
        return "kernel (syscalls, TCP, scheduling)"
    if sym.startswith(("runtime.", "internal/runtime", "runtime/", "aeshash", "gcWriteBarrier", "sync.", "sync/")):
        return "Go runtime (scheduler, netpoll, GC, malloc)"
    if sym.startswith("github.com/pgveil/pgveil/keyring") or sym.startswith(("crypto/", "encoding/base64", "vendor/golang.org/x/crypto")):
        return "cryptography (keyring, crypto/*, base64)"
    if sym.startswith("github.com/pgveil/pgveil/"):
        return "pgveil code (proxy, rewrite, ...)"
    if sym.startswith("github.com/jackc/pgx"):
        return "pgproto3 codec"
    if sym.startswith("github.com/prometheus"):
        return "Prometheus client (metrics)"
    if sym.startswith(("bufio.", "net.", "internal/poll", "syscall.", "io.")):
        return "Go net, bufio, syscall wrappers"
    if sym.startswith("__vdso"):
        return "vDSO (clock_gettime)"
    return "other user space (libc, libevent, the program's own code)"


def main():
    path, title = sys.argv[1], sys.argv[2]
    selfs = defaultdict(float)
    children = {}
    own = []
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            ch, se, kind, sym = float(m.group(1)), float(m.group(2)), m.group(3), m.group(4)
            selfs[category(kind, sym)] += se
            children.setdefault(sym, ch)
            if sym.startswith("github.com/pgveil/pgveil/"):
                own.append((ch, se, sym))
    if not selfs:
        print(f"_{title}: no perf samples._\n")
        return
    print(f"**{title}**: the process's CPU samples by where the code runs (self time):\n")
    print("| where | share |\n|---|--:|")
    for cat, v in sorted(selfs.items(), key=lambda kv: -kv[1]):
        if v >= 0.05:
            print(f"| {cat} | {v:.1f}% |")
    print()
    print("Inclusive share of some paths (they overlap):\n")
    print("| path | share |\n|---|--:|")
    for syms, label in INCLUSIVE:
        found = [children[x] for x in syms if x in children]
        if found:
            print(f"| {label} | {max(found):.1f}% |")
    print()
    skip = ("proxy.(*Session).serve", "proxy.(*Server).Serve", "proxy.(*Session).serverLoop", "proxy.(*Session).clientLoop")
    own = [o for o in sorted(own, reverse=True) if not any(o[2].endswith(s) or (s + ".") in o[2] for s in skip)]
    if own:
        print("pgveil functions with the most inclusive time (below the two session loops):\n")
        print("| function | inclusive | self |\n|---|--:|--:|")
        for ch, se, sym in own[:12]:
            print(f"| `{sym.replace('github.com/pgveil/pgveil/', '')}` | {ch:.1f}% | {se:.1f}% |")
        print()


if __name__ == "__main__":
    main()
