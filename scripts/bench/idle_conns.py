#!/usr/bin/python3
"""Open N client connections, use each once, then hold them idle.

Used by scripts/bench.sh to measure pgveil's resident memory with many idle
clients. Usage: idle_conns.py HOST PORT USER DBNAME N READY_FILE

Each connection runs one `SELECT 1` (as an application's pool would on
check-out) and then stays open and idle. When all N are open the script
writes "ready" to READY_FILE and sleeps until it is killed.
"""
import os
import sys
import time

import psycopg2


def main():
    host, port, user, dbname, n, ready = sys.argv[1:7]
    conns = []
    for _ in range(int(n)):
        c = psycopg2.connect(host=host, port=int(port), user=user, dbname=dbname,
                             password=os.environ.get("PGPASSWORD"),
                             application_name="pgveil-bench-idle")
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
        conns.append(c)
    with open(ready, "w") as f:
        f.write("ready %d\n" % len(conns))
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
