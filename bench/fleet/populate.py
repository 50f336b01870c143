#!/usr/bin/env python3
"""Fills an initialized heex-cloud data directory's SQLite store with N devices.

The rows are written the way enrollment writes them (devices and their label rows, every
device enrolled with the owner's first key), in one transaction, so that list and count
queries can be measured at fleet scale without N real enrollments. Usage:
    populate.py DATA_DIR N
Labels: site=site-00..site-99 (1% of the fleet each), retired=yes on 1 device in 100.
The triggers of the store keep the counts and the search index as enrollment would.
"""
import json
import os
import random
import sqlite3
import string
import sys
import time

ALPHABET = string.digits + string.ascii_letters


def base62(n, rng):
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def main():
    data_dir, n = sys.argv[1], int(sys.argv[2])
    rng = random.Random(42)
    db = sqlite3.connect(os.path.join(data_dir, "heex.db"))
    db.execute("PRAGMA foreign_keys = ON")
    (ws, domain_key, member) = db.execute(
        "SELECT k.workspace_id, k.id, k.member_id FROM api_keys k ORDER BY k.created_at LIMIT 1"
    ).fetchone()
    with open(os.path.join(data_dir, "cloud.toml")) as f:
        domain = next(
            line.split("=", 1)[1].strip().strip('"')
            for line in f
            if line.startswith("trust_domain")
        )
    now = int(time.time())
    start = now - n  # one enrollment a second, the last one now
    facts = json.dumps({"hostname": "robot", "os": "Debian GNU/Linux 12", "arch": "x86_64",
                        "cpus": 4})
    t0 = time.time()
    db.execute("BEGIN")
    batch, labels = [], []
    for i in range(n):
        dev = "dev_" + base62(20, rng)
        lab = {"site": f"site-{i % 100:02d}"}
        if i % 100 == 7:
            lab["retired"] = "yes"
        seen = None if i % 10 == 0 else now - rng.randrange(0, 30 * 86400)
        batch.append((dev, ws, f"robot-{i:07d}", json.dumps(lab), facts,
                      f"spiffe://{domain}/ws/{ws}/device/{dev}", start + i, domain_key,
                      member, f"{i:032x}", now + rng.randrange(0, 30 * 86400), seen, "0.1.0"))
        labels.extend((dev, ws, start + i, k, v) for k, v in lab.items())
        if len(batch) == 10000:
            flush(db, batch, labels)
    flush(db, batch, labels)
    db.execute("UPDATE api_keys SET uses = uses + ? WHERE id = ?", (n, domain_key))
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    print(f"populated {n} devices in {time.time() - t0:.1f} s", file=sys.stderr)


def flush(db, batch, labels):
    db.executemany(
        "INSERT INTO devices (id, workspace_id, name, labels, facts, spiffe_id, enrolled_at,"
        " enrolled_by_key, enrolled_by_member, cert_serial, cert_expires_at, last_seen_at,"
        " agent_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
    db.executemany(
        "INSERT INTO device_labels (device_id, workspace_id, enrolled_at, key, value)"
        " VALUES (?, ?, ?, ?, ?)", labels)
    batch.clear()
    labels.clear()


if __name__ == "__main__":
    main()
