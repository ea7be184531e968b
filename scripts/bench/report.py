#!/usr/bin/python3
"""Render docs/BENCHMARKS.md from the files scripts/bench.sh collects.

Usage: report.py RESULTS FACTS [WORKDIR] > docs/BENCHMARKS.md

RESULTS: tab-separated lines "section group target round tps tx cpu_ticks"
(for section "bulk": "bulk read target round seconds rows cpu_ticks").
A run that failed has tps "failed". FACTS: "key<TAB>value" lines. WORKDIR
may hold profile-*.md fragments (scripts/bench/perf_summary.py).
Standard library only.
"""
import os
import statistics
import sys
from collections import defaultdict

INTRO = """\
# pgveil benchmarks

This file is written by `make bench` (`scripts/bench.sh`, helpers in
`scripts/bench/`); do not edit it by hand, rerun it. One run starts a
throwaway PostgreSQL cluster from the installed binaries (or uses
`DATABASE_URL`), PgBouncer in session mode and pgveil, each on a free port,
and measures, in that one run:

1. plain traffic: `pgbench -S` in each protocol mode against Postgres
   directly, through PgBouncer and through pgveil, interleaved (for each
   round and mode: direct, PgBouncer, pgveil, and for reference a second
   pgveil that gives each client a backend of its own, as a direct
   connection has; in this order in odd rounds, in the reverse order in
   even ones, so that no target always runs in the same place),
   medians over the rounds, and the proxies' CPU time per transaction
   (utime + stime from `/proc/PID/stat` before and after each run, divided
   by the transactions);
2. pgveil's resident memory with idle clients connected;
3. encrypted OLTP: pgbench custom scripts through pgveil on an encrypted
   schema against the same scripts through PgBouncer on a plaintext copy;
4. bulk read of a table with two encrypted columns through pgveil against
   the plaintext table read directly;
5. `pgveil backfill` of a users table against the database's own single
   `UPDATE` of the same columns.

The machine is small (2 cores) and shared by the client (pgbench), the
proxy and Postgres, so every CPU cycle a proxy spends is taken from
Postgres: CPU per transaction is the steadier figure, throughput the one
users see. Figures from one run on a shared machine vary by several percent
from run to run; the interleaving keeps the comparisons within a run fair.
So does a quiet database at the start of every run: the tables the runs
write do not autovacuum, and after a run that inserted, the runner deletes
the rows it added, vacuums and checkpoints, outside the measured time, so
that every run meets the same tables and no run pays for the background
work another one caused.
"""


def num(s):
    try:
        return float(s)
    except ValueError:
        return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0):
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def verdict(ok):
    if ok is None:
        return "**not measured**"
    return "**met**" if ok else "**not met**"


def main():
    results_path, facts_path = sys.argv[1:3]
    workdir = sys.argv[3] if len(sys.argv) > 3 else None
    facts = {}
    with open(facts_path) as f:
        for line in f:
            line = line.rstrip("\n")
            if "\t" in line:
                k, v = line.split("\t", 1)
                facts.setdefault(k, v)
    clk = float(facts.get("clk_tck", "100"))

    # runs[(section, group, target)] = list of (round, tps, tx, cpu_ticks)
    runs = defaultdict(list)
    with open(results_path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 7:
                continue
            section, group, target, rnd, tps, tx, cpu = parts
            runs[(section, group, target)].append((int(rnd), num(tps), num(tx), num(cpu)))

    def tps_med(key):
        return med([r[1] for r in runs.get(key, [])])

    def failed(key):
        return any(r[1] is None for r in runs.get(key, []))

    def us_per_tx(key):
        vals = []
        for _, tps, tx, cpu in runs.get(key, []):
            if tps is not None and tx and cpu is not None:
                vals.append(cpu / clk * 1e6 / tx)
        return med(vals)

    def per_round(key):
        return " / ".join("failed" if r[1] is None else fmt(r[1]) for r in sorted(runs.get(key, [])))

    out = [INTRO]
    out.append("## How it was run\n")
    out.append("```\nmake bench        # runs scripts/bench.sh\n```\n")
    out.append(
        f"Last run: {facts.get('date', '?')}, commit {facts.get('commit', '?')}, "
        f"{facts.get('runtime_seconds', '?')} s in all.\n")
    out.append("| | |\n|---|---|")
    for label, key in [("CPUs (nproc)", "nproc"), ("CPU model", "cpu_model"), ("RAM", "mem_total"),
                       ("Kernel", "kernel"), ("PostgreSQL", "pg_version"), ("Postgres setup", "pg_source"),
                       ("PgBouncer", "pgbouncer_version"), ("Go", "go_version"),
                       ("pgveil's event loops (`proxy.io_uring: auto`)", "pgveil_io"),
                       ("Load average (1/5/15 min) at the start", "loadavg_start"),
                       ("Load average at the end", "loadavg_end")]:
        out.append(f"| {label} | {facts.get(key, '?')} |")
    out.append("")
    try:
        load = float(facts.get("loadavg_start", "0").split()[0])
        cpus = int(facts.get("nproc", "1"))
    except ValueError:
        load, cpus = 0.0, 1
    if load > cpus:
        out.append(
            f"**The machine was busy with other work during this run** (load average {load:.1f} on {cpus} "
            "CPUs at the start): every figure below is lower than on an idle machine, and throughput "
            "ratios depend on how the kernel shared the CPUs out. The comparisons are within one run "
            "and interleaved, and the CPU time per transaction is the figure least disturbed by the "
            "other work.\n")
    out.append(
        f"pgbench: `-c {facts.get('clients')} -j {facts.get('threads')}`, scale {facts.get('scale')}, "
        f"{facts.get('rounds')} interleaved rounds; PgBouncer `pool_mode = session`; pgveil with the "
        "application tables of SPEC §3 configured (users with a third encrypted column, `phone`), "
        "so the pgbench tables pass through.\n")

    # -- plain traffic -------------------------------------------------------
    out.append(f"## 1. Plain traffic: `pgbench -S -T {facts.get('duration')}`\n")
    out.append("Medians of the rounds. CPU is the proxy process's utime + stime per transaction. "
               "PgBouncer is configured as it comes: a client that disconnects leaves its server connection "
               "in the pool, so each pgbench run gets the backends the runs before it warmed. So is pgveil: "
               "it passes every login through to PostgreSQL (SPEC §7), on a connection opened for it, and "
               "then carries the session on the backend a client of the same user, database and parameters "
               "left idle, reset with `DISCARD ALL` (`proxy.max_idle_upstreams`). The reference column is "
               "pgveil with `max_idle_upstreams: 0`: each client on a backend started for it, as direct "
               "connections are; it differs from pgveil by that alone.\n")
    out.append("| mode | direct tps | PgBouncer tps | pgveil tps | pgveil / PgBouncer | pgveil / direct "
               "| PgBouncer / direct | PgBouncer CPU µs/tx | pgveil CPU µs/tx "
               "| reference: pgveil, a new backend per client, tps | pgveil / it | its CPU µs/tx |")
    out.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    thr_ok, cpu_ok = [], []
    for mode in ("simple", "extended", "prepared"):
        d = tps_med(("select", mode, "direct"))
        b = tps_med(("select", mode, "pgbouncer"))
        v = tps_med(("select", mode, "pgveil"))
        bu = us_per_tx(("select", mode, "pgbouncer"))
        vu = us_per_tx(("select", mode, "pgveil"))
        if failed(("select", mode, "pgveil")):
            thr_ok.append(False)
        elif v is not None and b is not None:
            thr_ok.append(v >= b)
        if vu is not None and bu is not None:
            cpu_ok.append(vu <= bu)
        b1 = tps_med(("select", mode, "pgveil-fresh"))
        out.append(f"| {mode} | {fmt(d)} | {fmt(b)} | {fmt(v)} | {fmt(ratio(v, b), 2)} | {fmt(ratio(v, d), 2)} "
                   f"| {fmt(ratio(b, d), 2)} | {fmt(bu, 1)} | {fmt(vu, 1)} "
                   f"| {fmt(b1)} | {fmt(ratio(v, b1), 2)} | {fmt(us_per_tx(('select', mode, 'pgveil-fresh')), 1)} |")
    out.append("")
    out.append("Every run (tps, round 1 / 2 / ...):\n")
    out.append("| mode | direct | PgBouncer | pgveil | pgveil, a new backend per client |\n|---|---|---|---|---|")
    for mode in ("simple", "extended", "prepared"):
        out.append(f"| {mode} | {per_round(('select', mode, 'direct'))} | {per_round(('select', mode, 'pgbouncer'))} "
                   f"| {per_round(('select', mode, 'pgveil'))} | {per_round(('select', mode, 'pgveil-fresh'))} |")
    out.append("")

    # -- reference relays ----------------------------------------------------
    if runs.get(("relay", "prepared", "relay-epoll")):
        out.append("### Reference: what moving bytes costs in Go\n")
        out.append("pgveil carries a session without TLS on an event loop after startup (`proxy.event_loops`, "
                   "`proxy/eventloop_linux.go`): non-blocking sockets, with its system calls made without telling "
                   "the Go scheduler, as PgBouncer's libevent loop works; on io_uring where the kernel offers it "
                   "(`proxy.io_uring`, `proxy/eventloop_uring_linux.go`: one `io_uring_enter` per round submits "
                   "the round's sends and waits, a multishot receive per socket reads), on epoll elsewhere "
                   "(a system call to wait, one per read, one per write). Sessions with TLS run on two goroutines "
                   "each, blocking reads woken by the Go netpoller. Next to PgBouncer and pgveil: pgveil with its "
                   "loops on epoll (`io_uring: off`), pgveil with every session on goroutines (`event_loops: 0`), "
                   "and `scripts/bench/relay`, which forwards bytes and does nothing else, built each of three "
                   "ways (a goroutine per direction with `io.Copy`; a raw epoll loop; an io_uring loop). "
                   "`pgbench -S -M prepared -T 5`, 2 interleaved rounds, medians; CPU of each process.\n")
        out.append("| target | tps | CPU µs/tx |\n|---|--:|--:|")
        for target, label in (("pgbouncer", "PgBouncer"),
                              ("pgveil", f"pgveil (the default: event loops on {facts.get('pgveil_io', '?')})"),
                              ("pgveil-epoll", "pgveil, event loops on epoll (io_uring: off)"),
                              ("pgveil-goroutines", "pgveil, every session on goroutines (event_loops: 0)"),
                              ("relay-goroutines", "bare Go relay, goroutine per direction"),
                              ("relay-epoll", "bare Go relay, raw epoll loop"),
                              ("relay-uring", "bare Go relay, io_uring loop")):
            key = ("relay", "prepared", target)
            out.append(f"| {label} | {fmt(tps_med(key))} | {fmt(us_per_tx(key), 1)} |")
        out.append("")

    # -- memory --------------------------------------------------------------
    out.append("## 2. Memory with idle clients\n")
    idle = facts.get("idle_conns", "200")
    rss_idle = num(facts.get("rss_idle_kb", ""))
    out.append(f"A freshly started pgveil, then {idle} client connections (psycopg2, each used once for "
               "`SELECT 1`, then idle), measured 3 s after the last one connected.\n")
    out.append("| | MB |\n|---|--:|")
    for label, key in [("VmRSS, fresh", "rss_fresh_kb"), (f"VmRSS, {idle} idle clients", "rss_idle_kb"),
                       (f"VmHWM, {idle} idle clients", "hwm_idle_kb")]:
        v = num(facts.get(key, ""))
        out.append(f"| {label} | {fmt(v / 1024 if v is not None else None, 1)} |")
    out.append(f"| threads | {facts.get('threads_idle', '?')} |")
    out.append("")

    # -- encrypted OLTP ------------------------------------------------------
    out.append(f"## 3. Encrypted OLTP: pgbench custom scripts, `-T {facts.get('oltp_duration')}`, "
               f"{facts.get('oltp_rounds', facts.get('rounds'))} interleaved rounds\n")
    out.append(
        f"`users` holds {fmt(num(facts.get('oltp_users', '0')))} rows in two databases: encrypted "
        "(email, full_name, phone as Fernet tokens, `email_hash` blind index with the unique constraint; "
        "loaded through pgveil with `COPY ... FROM STDIN`) and a plaintext copy (unique index on email). "
        "pgveil serves the encrypted one, PgBouncer the plaintext one, with the same scripts "
        "(`scripts/bench/*.sql`):\n")
    out.append("- **lookup**: `SELECT email, full_name, phone FROM users WHERE email = ...`: pgveil hashes the "
               "email into a lookup on `email_hash` and decrypts three columns.")
    out.append("- **insert**: `INSERT INTO users (email, full_name, phone) VALUES (...)`: pgveil encrypts "
               "three values and adds the blind index.")
    out.append("- **simple**: `-M simple`, the values inlined as literals (as psql or psycopg2 send them).")
    out.append("- **prepared**: `-M prepared`, the values as bind parameters. pgbench variables are numbers, "
               "so each transaction first builds the strings with `SELECT 'u' || :id::text ... \\gset` (no "
               "table, so it passes pgveil untouched); that statement is in both runs, which halves the "
               "throughput of both and dilutes the ratio; the CPU per transaction shows pgveil's own "
               "cost better.\n")
    out.append("| script | PgBouncer + plaintext tps | pgveil + encryption tps | ratio | PgBouncer CPU µs/tx "
               "| pgveil CPU µs/tx | runs (PgBouncer; pgveil) "
               "| reference: pgveil, a new backend per client, + encryption tps | pgveil / it |")
    out.append("|---|--:|--:|--:|--:|--:|---|--:|--:|")
    oltp_ok = []
    for group in ("lookup/simple", "insert/simple", "lookup/prepared", "insert/prepared"):
        b = tps_med(("oltp", group, "pgbouncer"))
        v = tps_med(("oltp", group, "pgveil"))
        if failed(("oltp", group, "pgveil")):
            oltp_ok.append(False)
        elif v is not None and b is not None:
            oltp_ok.append(v >= 0.9 * b)
        out.append(f"| {group} | {fmt(b)} | {fmt(v)} | {fmt(ratio(v, b), 2)} "
                   f"| {fmt(us_per_tx(('oltp', group, 'pgbouncer')), 1)} | {fmt(us_per_tx(('oltp', group, 'pgveil')), 1)} "
                   f"| {per_round(('oltp', group, 'pgbouncer'))}; {per_round(('oltp', group, 'pgveil'))} "
                   f"| {fmt(tps_med(('oltp', group, 'pgveil-fresh')))} "
                   f"| {fmt(ratio(v, tps_med(('oltp', group, 'pgveil-fresh'))), 2)} |")
    out.append("")
    shape = []
    for group in ("lookup/simple", "insert/simple"):
        b = tps_med(("oltp", group, "pgbouncer"))
        r = tps_med(("oltp", group, "pgbouncer-shape"))
        v = tps_med(("oltp", group, "pgveil"))
        if r is not None:
            shape.append(f"{group.split('/')[0]} {fmt(r)} tps, {fmt(ratio(r, b), 2)} of plaintext "
                         f"(pgveil: {fmt(ratio(v, r), 2)} of it)")
    if shape:
        out.append("Reference, interleaved with the simple-protocol rounds: PgBouncer on `users_shape`, a copy of "
                   "the encrypted table (the same tokens) whose blind index is replaced by keys pgbench can "
                   "spell, running the statements pgveil sends (`scripts/bench/shape_*_simple.sql`) with no "
                   "cryptography: what the encrypted rows alone cost PostgreSQL, the ceiling for any proxy. "
                   + "; ".join(shape) + ".\n")
    out.append("pgveil is restarted before each protocol mode's block, so each starts with an empty plan "
               "cache. After the block, one pgveil serves the lookup as an inlined literal, then as a "
               f"prepared statement, then inlined again: **{facts.get('oltp_mixed_probe', 'not run')}**.\n")
    errs = [(k, v) for k, v in facts.items() if k.startswith("error_")]
    if errs:
        out.append("Failed runs (first error line of each):\n")
        for k, v in errs:
            out.append(f"- `{k[6:]}`: `{v}`")
        out.append("")

    # -- bulk read -----------------------------------------------------------
    rows = num(facts.get("bulk_rows", "0")) or 0
    out.append(f"## 4. Bulk read: {fmt(rows)} rows, two encrypted columns\n")
    out.append("`SELECT id, user_id, title, description FROM tasks` with psql (`-At`, output to a file): the "
               "plaintext table directly against the encrypted table through a freshly started pgveil "
               "(title about 40 bytes, description about 85). Values per second per core: decrypted values "
               "divided by pgveil's CPU seconds for the read.\n")
    direct_s = med([r[1] for r in runs.get(("bulk", "read", "direct"), [])])
    veil_s = med([r[1] for r in runs.get(("bulk", "read", "pgveil"), [])])
    vps = med([2 * rows / (r[3] / clk) for r in runs.get(("bulk", "read", "pgveil"), []) if r[3]])
    hwm = num(facts.get("bulk_hwm_kb", ""))
    out.append("| | |\n|---|--:|")
    out.append(f"| direct, plaintext: seconds (median) | {fmt(direct_s, 3)} |")
    out.append(f"| pgveil, decrypting: seconds (median) | {fmt(veil_s, 3)} |")
    out.append(f"| pgveil / direct time | {fmt(ratio(veil_s, direct_s), 2)} |")
    out.append(f"| decrypted values per second per core of pgveil | {fmt(vps)} |")
    out.append(f"| pgveil VmRSS before the reads (MB) | {fmt(num(facts.get('bulk_rss_start_kb', '')) / 1024 if facts.get('bulk_rss_start_kb') else None, 1)} |")
    out.append(f"| pgveil peak resident memory, VmHWM (MB) | {fmt(hwm / 1024 if hwm else None, 1)} |")
    out.append(f"| rows received through pgveil / holding the plaintext | {facts.get('bulk_rows_read', '?')} / {facts.get('bulk_plain_sample', '?')} |")
    out.append("")

    # -- backfill ------------------------------------------------------------
    bf_rows = num(facts.get("backfill_rows", "0")) or 0
    upd_s = num(facts.get("update_seconds", ""))
    bf_s = num(facts.get("backfill_seconds", ""))
    upd_rate = bf_rows / upd_s if upd_s else None
    bf_rate = bf_rows / bf_s if bf_s and facts.get("backfill_exit") == "0" else None
    out.append(f"## 5. Backfill: {fmt(bf_rows)} users rows, three encrypted columns, one searchable\n")
    out.append("Two identical tables in the shape `pgveil schema` leaves (text columns, `email_hash` with a "
               "unique index, plaintext values). One gets the database's own single `UPDATE` that rewrites "
               "email, full_name, phone and email_hash with values of the same length as the tokens "
               "(`rpad` to the Fernet token length, 64 hex characters), the other "
               f"`pgveil backfill --workers {facts.get('backfill_workers')}` (default batch size).\n")
    out.append("| | seconds | rows/s |\n|---|--:|--:|")
    out.append(f"| single UPDATE | {fmt(upd_s, 2)} | {fmt(upd_rate)} |")
    out.append(f"| pgveil backfill (exit {facts.get('backfill_exit', '?')}) | {fmt(bf_s, 2)} | {fmt(bf_rate)} |")
    out.append(f"| backfill / UPDATE rate | | {fmt(ratio(bf_rate, upd_rate), 2)} |")
    out.append("")
    out.append(f"Average stored lengths (email/full_name/phone) after the UPDATE: {facts.get('update_avg_len', '?')}; "
               f"after the backfill: {facts.get('backfill_avg_len', '?')}. Rows holding tokens in all three "
               f"columns and a 64-character blind index after the backfill: {facts.get('backfill_check', '?')}.\n")

    # -- profiles ------------------------------------------------------------
    frags = []
    if workdir:
        for name in ("select-pgveil", "select-pgbouncer", "oltp-simple", "oltp-prepared", "bulk-pgveil"):
            fp = os.path.join(workdir, f"profile-{name}.md")
            if os.path.exists(fp):
                with open(fp) as f:
                    text = f.read().strip()
                if text:
                    frags.append(text)
    if frags:
        out.append("## Where the CPU goes (perf, this run)\n")
        out.append("`perf record -g` on the proxy process during one extra `pgbench -S -M extended` run each, "
                   "one extra encrypted OLTP run per protocol mode and one extra bulk read (none counted above). On loopback a sender's `write` also "
                   "runs the kernel's receive path for its peer, so both proxies pay for TCP twice per "
                   "message; what differs is the rest.\n")
        for text in frags:
            out.append(text + "\n")

    # -- targets -------------------------------------------------------------
    out.append("## Targets\n")
    out.append("| target | result | |\n|---|---|---|")

    def all_or_none(xs):
        return None if not xs else all(xs)

    out.append(f"| pgveil throughput ≥ PgBouncer's in every mode (issue 2) | "
               f"{' / '.join(fmt(ratio(tps_med(('select', m, 'pgveil')), tps_med(('select', m, 'pgbouncer'))), 2) for m in ('simple', 'extended', 'prepared'))} "
               f"(simple / extended / prepared) | {verdict(all_or_none(thr_ok))} |")
    if runs.get(("select", "prepared", "pgveil-fresh")):
        out.append(f"| reference, not a target: pgveil with a new backend per client (max_idle_upstreams: 0) / PgBouncer | "
                   f"{' / '.join(fmt(ratio(tps_med(('select', m, 'pgveil-fresh')), tps_med(('select', m, 'pgbouncer'))), 2) for m in ('simple', 'extended', 'prepared'))} "
                   f"(simple / extended / prepared) | |")
    out.append(f"| pgveil CPU per query ≤ PgBouncer's (issue 2) | "
               f"{' / '.join(fmt(us_per_tx(('select', m, 'pgveil')), 1) + ' vs ' + fmt(us_per_tx(('select', m, 'pgbouncer')), 1) for m in ('simple', 'extended', 'prepared'))} µs "
               f"| {verdict(all_or_none(cpu_ok))} |")
    out.append(f"| RSS with {idle} idle clients < 50 MB (issue 2) | {fmt(rss_idle / 1024 if rss_idle else None, 1)} MB "
               f"| {verdict(None if rss_idle is None else rss_idle < 50 * 1024)} |")
    out.append(f"| encrypted OLTP ≥ 0.9 of PgBouncer without encryption (issue 3) | "
               f"{' / '.join(fmt(ratio(tps_med(('oltp', g, 'pgveil')), tps_med(('oltp', g, 'pgbouncer'))), 2) for g in ('lookup/simple', 'insert/simple', 'lookup/prepared', 'insert/prepared'))} "
               f"(lookup, insert simple; lookup, insert prepared) | {verdict(all_or_none(oltp_ok))} |")
    out.append(f"| bulk read ≥ 500,000 decrypted values/s per core (issue 3) | {fmt(vps)} "
               f"| {verdict(None if vps is None else vps >= 500000)} |")
    out.append(f"| bulk read peak RSS < 64 MB (issue 3) | {fmt(hwm / 1024 if hwm else None, 1)} MB "
               f"| {verdict(None if hwm is None else hwm < 64 * 1024)} |")
    bf_ratio = ratio(bf_rate, upd_rate)
    out.append(f"| backfill ≥ 0.5 of the single UPDATE's rate (issue 4) | {fmt(bf_ratio, 2)} "
               f"| {verdict(None if bf_ratio is None else bf_ratio >= 0.5)} |")
    out.append("")
    out.append("Sanity checks of this run: users rows stored as tokens with a blind index "
               f"{facts.get('sanity_users_tokens', '?')}, tasks rows stored as tokens "
               f"{facts.get('sanity_tasks_tokens', '?')}; a lookup by email through pgveil returned "
               f"`{facts.get('sanity_read_back', '?')}`.\n")
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    main()
