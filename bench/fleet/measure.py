#!/usr/bin/env python3
"""Times device list and count requests against a running heex-cloud.

Usage: measure.py URL CA_FILE REPEAT [--console-only]   (API key in HEEX_API_KEY)
Each request is made REPEAT times over one kept-alive HTTPS connection; the median time
from sending the request to having the whole body is printed per case, in milliseconds.
That is the server's time plus one loopback round trip and the TLS record work.
The console's Devices pages are timed the same way, signed in with the key; the console's
assets are weighed gzip-compressed.
"""
import gzip
import http.client
import json
import os
import ssl
import statistics
import sys
import time
import urllib.parse


def main():
    url, ca_file, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
    key = os.environ["HEEX_API_KEY"]
    u = urllib.parse.urlsplit(url)
    ctx = ssl.create_default_context(cafile=ca_file)
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx)
    headers = {"Authorization": f"Bearer {key}"}

    def get(path):
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            sys.exit(f"GET {path}: {resp.status} {body[:200]!r}")
        return json.loads(body)

    def timed(name, path):
        get(path)  # warm the statement cache and the page cache
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            body = get(path)
            times.append((time.perf_counter() - t) * 1000)
        n = len(body.get("devices", [])) if "devices" in body else "-"
        print(f"{name:<44} {statistics.median(times):8.2f} ms  (items: {n})")
        return body

    console(conn, u, key, repeat)
    if "--console-only" in sys.argv:
        return
    summary = timed("summary (GET /v1/devices/summary)", "/v1/devices/summary")
    total = summary["total"]
    print(f"  total={total} connected={summary['connected']} "
          f"expiring_soon={summary['expiring_soon']} revoked={summary['revoked']}")
    timed("first page (limit 100)", "/v1/devices")
    timed("first page (limit 1000)", "/v1/devices?limit=1000")
    # The cursor after device 900,000: walked there a page of 1000 at a time.
    deep_at = min(900_000, total - 100)
    after, walked, t = None, 0, time.perf_counter()
    while walked < deep_at:
        q = "/v1/devices?limit=1000" + (f"&after={after}" if after else "")
        page = get(q)
        if not page.get("next_after"):
            break
        walked += len(page["devices"])
        after = page["next_after"]
    print(f"  (walked {walked} devices in {time.perf_counter() - t:.1f} s)")
    timed(f"deep page (after {walked}, limit 100)", f"/v1/devices?after={after}")
    timed("label page (site=site-42, 1%)", "/v1/devices?label=site%3Dsite-42")
    timed("label page, deep (site=site-42 after 900k)",
          f"/v1/devices?label=site%3Dsite-42&after={after}")
    timed("label page (retired, 1%)", "/v1/devices?label=retired")
    timed("label page (site=site-42,!retired)", "/v1/devices?label=site%3Dsite-42,!retired")
    timed("connected=false page", "/v1/devices?connected=false")
    timed("sorted by name, first page", "/v1/devices?sort=name")
    timed("sorted by last seen, newest first", "/v1/devices?sort=-last_seen")
    timed("search (name contains 'robot-09')", "/v1/devices?search=robot-09")
    timed("search (name contains 'robot-0912', 0.1%)", "/v1/devices?search=robot-0912")
    timed("search (id or name contains 'abc', rare)", "/v1/devices?search=abc")
    timed("search 'robot-0912', by name", "/v1/devices?search=robot-0912&sort=name")


def console(conn, u, key, repeat):
    """The console's Devices pages, signed in with `key`, and the size of its assets."""
    origin = f"https://{u.hostname}:{u.port}"
    conn.request("POST", "/console/signin", body=urllib.parse.urlencode({"key": key}),
                 headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": origin})
    resp = conn.getresponse()
    resp.read()
    cookie = next((v.split(";")[0] for k, v in resp.getheaders() if k.lower() == "set-cookie"), None)
    if resp.status != 303 or not cookie:
        sys.exit(f"console sign-in failed: {resp.status}")
    headers = {"Cookie": cookie}

    def get(path):
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            sys.exit(f"GET {path}: {resp.status} {body[:200]!r}")
        return body.decode()

    def timed(name, path):
        get(path)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            body = get(path)
            times.append((time.perf_counter() - t) * 1000)
        rows = body.count("<tr data-id=")
        print(f"{name:<44} {statistics.median(times):8.2f} ms  (rows: {rows}, "
              f"{len(body) / 1024:.0f} KiB)")
        return body

    first = timed("console: Devices page", "/console/devices")
    marker = 'rel="next"'
    nxt = first[:first.find(marker)]
    nxt = nxt[nxt.rfind('href="') + 6:].split('"')[0].replace("&amp;", "&")
    timed("console: Devices page 2", nxt)
    timed("console: live refresh (part=rows)", "/console/devices?part=rows")
    timed("console: label filter (site=site-42)", "/console/devices?label=site%3Dsite-42")
    timed("console: connected only", "/console/devices?state=connected")
    timed("console: newest first", "/console/devices?sort=-enrolled")
    device = first[first.find('href="/console/devices/') + 6:].split('"')[0]
    timed("console: a device's page", device)
    total = 0
    for asset in ("/console/assets/console.js", "/console/assets/console.css"):
        raw = get(asset).encode()
        packed = len(gzip.compress(raw, 9))
        total += packed
        print(f"  {asset}: {len(raw)} bytes, {packed} gzip-compressed")
    print(f"  console assets: {total / 1024:.1f} KiB gzip-compressed in total")


if __name__ == "__main__":
    main()
