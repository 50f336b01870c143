"""The web console in a real browser (Debian's Chromium driven by Playwright).

Run by tests/tests/console_browser.rs against a real heex-cloud; it reads what it needs from
the environment and never prints a key or a token. Exit status 0 means every check passed;
otherwise the failed check is the last line of stderr.

HEEX_URL, HEEX_OWNER_KEY, HEEX_FINGERPRINT, HEEX_INSTALLER, HEEX_AGENT, HEEX_MACHINE_DIR
(under which each enrolled machine gets its own directory), HEEX_RESULT (a file where the
key id that enrolled robot-7 is written). With HEEX_SCREENSHOTS=DIR it also saves the
screenshots of docs/console.md there (pages that show no key).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import axe_playwright_python
from playwright.sync_api import expect, sync_playwright

URL = os.environ["HEEX_URL"]
OWNER_KEY = os.environ["HEEX_OWNER_KEY"]
CHROMIUM = os.environ.get("HEEX_CHROMIUM", "/usr/bin/chromium")
AXE = (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text()
PAGES = ["/console/keys", "/console/keys?all=true", "/console/settings", "/console/audit",
         "/console/add-device", "/console/devices"]
SECRETS = [OWNER_KEY]
MACHINES = Path(os.environ["HEEX_MACHINE_DIR"])
AGENTS = []
# How long a live part of a page may take to show a change (it refreshes every 3 s).
LIVE_MS = 30000


def check(cond, what):
    if not cond:
        sys.stderr.write(f"FAILED: {what}\n")
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def context(browser):
    ctx = browser.new_context(ignore_https_errors=True)
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=URL)
    ctx.set_default_timeout(15000)
    return ctx


def accessible(page, what):
    """Zero serious or critical axe-core violations on the page as shown."""
    page.evaluate(AXE)
    result = page.evaluate("axe.run(document).then(r => r.violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3)})))")
    bad = [v for v in result if v["impact"] in ("serious", "critical")]
    check(not bad, f"axe: no serious or critical violation on {what} {json.dumps(bad)}")


def clipboard(page):
    return page.evaluate("navigator.clipboard.readText()")


def no_secret_in_html(ctx, who):
    """Every page's HTML, as the server sends it, holds no key or token."""
    for path in PAGES + ["/console/signin"]:
        body = ctx.request.get(URL + path, max_redirects=0).text()
        check(all(s not in body for s in SECRETS), f"{who}: {path} HTML holds no key or token")


def on_signin(page):
    return "/console/signin" in page.url


def sign_in(page, key):
    page.goto(URL + "/console/signin")
    page.fill("#key", key)
    page.click("form.card button[type=submit]")
    page.wait_for_url("**/console/keys")


def open_create_form(page):
    if not page.is_visible("#name"):
        page.click("details.card summary")


def reveal(page, submit):
    """Clicks `submit` and returns the secret the reveal box shows, once copying finished."""
    page.click(submit)
    page.wait_for_selector("#reveal:not([hidden])")
    # Locator assertions poll from Playwright's own injected script: the page's CSP (no
    # eval) does not apply to them, as it does to wait_for_function's string predicates.
    expect(page.locator("#reveal-status")).to_have_text(re.compile(r"^(Copied|Your browser)"))
    status = page.text_content("#reveal-status")
    check(status == "Copied to the clipboard.", f"copied within the click ({status!r})")
    return page.input_value("#reveal-secret")


def screenshot(page, name):
    """Saves the page as DIR/name.png when HEEX_SCREENSHOTS=DIR."""
    out = os.environ.get("HEEX_SCREENSHOTS")
    if out:
        page.screenshot(path=str(Path(out) / f"{name}.png"), full_page=True)


def install(name, key):
    """The real heex-installer enrolls machine `name` with `key`; returns the completed run."""
    machine = MACHINES / name
    env = dict(os.environ, HEEX_API_KEY=key)
    env.pop("HEEX_API_KEY_FILE", None)
    return subprocess.run(
        [os.environ["HEEX_INSTALLER"], "--server", URL, "--ca-fingerprint",
         os.environ["HEEX_FINGERPRINT"], "--name", name, "--config-dir",
         str(machine / "etc"), "--state-dir", str(machine / "state")],
        env=env, capture_output=True, text=True, timeout=120)


def start_agent(name):
    """The real agent of machine `name`, running until the checks end."""
    machine = MACHINES / name
    env = dict(os.environ, RUST_LOG="info")
    for var in ("NOTIFY_SOCKET", "HEEX_API_KEY", "HEEX_API_KEY_FILE"):
        env.pop(var, None)
    log = open(machine / "agent.log", "w")
    agent = subprocess.Popen(
        [os.environ["HEEX_AGENT"], "run", "--config", str(machine / "etc" / "agent.toml")],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    AGENTS.append(agent)
    return agent


def device_row(page, name):
    return page.locator("#device-rows tr", has=page.get_by_role("link", name=name, exact=True))


def main():
    try:
        run()
    finally:
        for agent in AGENTS:
            agent.kill()
            agent.wait()


def run():
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        owner_ctx = context(browser)
        owner = owner_ctx.new_page()
        messages = []

        def confirm(dialog):
            messages.append(dialog.message)
            dialog.accept()

        owner.on("dialog", confirm)

        # No cookie: every page leads to sign-in.
        for path in PAGES:
            owner.goto(URL + path)
            check(on_signin(owner), f"no session: {path} lands on sign-in")
        accessible(owner, "sign-in")

        # The owner signs in with the key printed at first start.
        sign_in(owner, OWNER_KEY)
        check(owner.locator("nav .who").text_content() == "owner@localhost", "owner signed in")
        accessible(owner, "API Keys")

        # Create New API Key: the clipboard holds exactly the new key.
        open_create_form(owner)
        owner.fill("#name", "robot-fleet")
        owner.select_option("#scope", "enroll")
        owner.select_option("#expires", "30")
        owner.fill("#max_uses", "5")
        new_key = reveal(owner, "#create-key button[type=submit]")
        check(new_key.startswith("heex_") and len(new_key) == len(OWNER_KEY), "a new key is shown")
        check(clipboard(owner) == new_key, "the clipboard holds exactly the new key")
        SECRETS.append(new_key)
        accessible(owner, "API Keys with a revealed key")
        owner.reload()
        check(owner.locator("tbody td:first-child", has_text="robot-fleet").count() == 1, "the new key is listed")
        screenshot(owner, "keys")
        no_secret_in_html(owner_ctx, "owner")
        copied_key = clipboard(owner)
        key_id = new_key[5:17]

        # Copy again: re-derived, the same key.
        copied = reveal(owner, f"form[action='/console/keys/{key_id}/copy'] button")
        check(copied == new_key and clipboard(owner) == new_key, "Copy gives the same key again")

        # The Devices page, opened before the machine exists, follows the fleet live (the
        # marker proves it is never reloaded).
        fleet = owner_ctx.new_page()
        fleet.on("dialog", confirm)
        fleet.goto(URL + "/console/devices")
        check(fleet.locator("#device-rows tr[data-id]").count() == 0, "no device yet")
        accessible(fleet, "Devices, empty")
        fleet.evaluate("window.heexNotReloaded = true")

        # Add device: the commands carry the key, each with a copy button, then it waits.
        adder = owner_ctx.new_page()
        adder.goto(URL + "/console/add-device")
        accessible(adder, "Add device")
        screenshot(adder, "add-device")
        adder.select_option("#enroll-key", key_id)
        adder.click("#pick-key button[type=submit]")
        adder.wait_for_selector("#commands:not([hidden])")
        docker = adder.text_content("#cmd-docker")
        check(f"-e HEEX_API_KEY='{new_key}'" in docker, "the docker command carries the key")
        check("heex-installer --systemd" in adder.text_content("#cmd-installer"), "installer line")
        check("HEEX_API_KEY" in adder.text_content("#cmd-compose"), "compose snippet")
        adder.click("button[data-copy=cmd-docker]")
        expect(adder.locator("button[data-copy=cmd-docker]")).to_have_text("Copied")
        check(clipboard(adder) == docker, "the docker command is copied")
        expect(adder.locator("#wait-status")).to_contain_text("Waiting for a device")
        accessible(adder, "Add device with commands")

        # The real installer enrolls a machine with the key read from the clipboard; the
        # Devices page shows it without a reload, then connected once its real agent runs.
        done = install("robot-7", copied_key)
        check(done.returncode == 0, f"the installer enrolled with the copied key: {done.stderr[-500:]}")
        Path(os.environ["HEEX_RESULT"]).write_text(json.dumps({"key_id": key_id}))
        robot = device_row(fleet, "robot-7")
        expect(robot).to_have_count(1, timeout=LIVE_MS)
        check(True, "the Devices page shows the enrolled machine without a reload")
        start_agent("robot-7")
        expect(robot.locator(".status.connected")).to_have_count(1, timeout=LIVE_MS)
        check(fleet.evaluate("window.heexNotReloaded === true"), "robot-7 shows connected without a reload")
        expect(fleet.locator("#device-counts")).to_contain_text("1 connected", timeout=LIVE_MS)
        expect(adder.locator("#wait-status")).to_have_text("robot-7 connected.", timeout=LIVE_MS)
        check(True, "Add device says robot-7 connected")
        accessible(fleet, "Devices with a connected machine")
        screenshot(fleet, "devices")

        # The device's page: facts, labels saved from the console, then the label filter.
        fleet.click("#device-rows a:text-is('robot-7')")
        fleet.wait_for_url("**/console/devices/*")
        check(fleet.locator("#device-status .status.connected").count() == 1, "the device page says connected")
        screenshot(fleet, "device")
        accessible(fleet, "a device's page")
        fleet.fill("#labels", "site=lyon\nrole=arm")
        fleet.click("form[action$='/labels'] button")
        fleet.wait_for_url("**?done=labelled")
        fleet.goto(URL + "/console/devices?label=site%3Dlyon")
        expect(device_row(fleet, "robot-7")).to_have_count(1)
        check(fleet.locator("#device-rows .label", has_text="role=arm").count() == 1, "labels saved and filtered on")

        # Invite bob; the invitation link is copied.
        owner.goto(URL + "/console/settings")
        accessible(owner, "Workspace Settings")
        owner.fill("#email", "bob@example.com")
        owner.select_option("#role", "member")
        link = reveal(owner, "#invite button[type=submit]")
        check("/console/join#heexinv_" in link and clipboard(owner) == link, "the invitation link is copied")
        SECRETS.append(link.split("#", 1)[1])
        owner.reload()
        check(owner.locator("tbody td:first-child", has_text="bob@example.com").count() == 1, "the invitation is pending")
        screenshot(owner, "settings")

        # Bob, in his own browser context, accepts, gets his first key and is signed in.
        bob_ctx = context(browser)
        bob = bob_ctx.new_page()
        bob.goto(link)
        check("#" not in bob.url, "the token leaves the address bar")
        accessible(bob, "Join")
        bob_key = reveal(bob, "#join button[type=submit]")
        check(bob_key.startswith("heex_") and clipboard(bob) == bob_key, "bob's first key is copied")
        SECRETS.append(bob_key)
        bob.click("#reveal-continue")
        bob.wait_for_url("**/console/keys")
        check(bob.locator("nav .who").text_content() == "bob@example.com", "bob is signed in")
        no_secret_in_html(bob_ctx, "bob")

        # Bob creates an enroll key and puts a machine on the cloud with it.
        open_create_form(bob)
        bob.fill("#name", "bob-fleet")
        bob.select_option("#scope", "enroll")
        bob_enroll = reveal(bob, "#create-key button[type=submit]")
        SECRETS.append(bob_enroll)
        done = install("bob-robot", clipboard(bob))
        check(done.returncode == 0, f"bob's key enrolled his machine: {done.stderr[-500:]}")
        start_agent("bob-robot")
        fleet.goto(URL + "/console/devices")
        bob_robot = device_row(fleet, "bob-robot")
        expect(bob_robot.locator(".status.connected")).to_have_count(1, timeout=LIVE_MS)
        check(True, "bob's machine is connected on the owner's Devices page")

        # The owner removes bob, with a confirmation saying exactly what happens.
        owner.goto(URL + "/console/settings")
        messages.clear()
        owner.click("button[aria-label='Remove bob@example.com']")
        owner.wait_for_url("**/console/settings?done=removed")
        check(any("Their 2 keys are revoked; the 1 machine they enrolled keeps running." in m
                  for m in messages), f"the removal confirmation says what happens: {messages}")
        check(owner.locator("tbody td:first-child", has_text="bob@example.com").count() == 0, "bob is gone")

        # Bob's next page load lands on sign-in; his keys are refused by the installer; his
        # machine stays connected on the owner's Devices page.
        bob.reload()
        check(on_signin(bob) and "ended=key" in bob.url, "bob's session died with his removal")
        refused = install("bob-robot-2", bob_enroll)
        check(refused.returncode != 0 and "revoked" in refused.stderr,
              f"the installer refuses bob's key ({refused.returncode}): {refused.stderr[-300:]}")
        fleet.wait_for_timeout(4000)
        check(bob_robot.locator(".status.connected").count() == 1,
              "bob's machine is still connected after his removal")

        # Bulk: label bob's machine from the list.
        bob_robot.locator("input[type=checkbox]").check()
        fleet.select_option("#op", "label")
        fleet.fill("#bulk-label", "team=bob")
        fleet.click("#bulk button[type=submit]")
        fleet.wait_for_url("**done=labelled**")
        check("Label set on 1 device." in fleet.text_content("p.flash"), "bulk label on the selection")
        check(device_row(fleet, "bob-robot").locator(".label", has_text="team=bob").count() == 1,
              "the label is on bob's machine")
        check(device_row(fleet, "robot-7").locator(".label", has_text="team=bob").count() == 0,
              "and only on it")

        # A cross-site POST with the owner's cookie is refused and changes nothing.
        refused = owner_ctx.request.post(URL + "/console/keys", headers={"Origin": "https://evil.example"},
                                         form={"name": "evil", "scope": "admin", "expires_in_days": "7"},
                                         max_redirects=0)
        check(refused.status == 403, f"a cross-site POST is refused ({refused.status})")
        owner.goto(URL + "/console/keys")
        check(owner.locator("tbody td:first-child", has_text="evil").count() == 0, "no key was created cross-site")

        # A revoked key's session is dead: sign in with a second admin key, revoke it.
        open_create_form(owner)
        owner.fill("#name", "laptop")
        owner.select_option("#scope", "admin")
        second = reveal(owner, "#create-key button[type=submit]")
        SECRETS.append(second)
        other_ctx = context(browser)
        other = other_ctx.new_page()
        sign_in(other, second)
        owner.goto(URL + "/console/keys")
        owner.click(f"form[action='/console/keys/{second[5:17]}/revoke'] button")
        owner.wait_for_url("**/console/keys?done=revoked")
        other.goto(URL + "/console/settings")
        check(on_signin(other) and "ended=key" in other.url, "a revoked key's session is dead")

        # Revoking robot-7 from its page closes its live session: its agent is told so.
        fleet.goto(URL + "/console/devices")
        fleet.click("#device-rows a:text-is('robot-7')")
        messages.clear()
        fleet.click("form[action$='/revoke'] button")
        fleet.wait_for_url("**?done=revoked")
        check(any("Revoke robot-7?" in m for m in messages), "revoking asks first")
        check(fleet.locator("#device-status .status.revoked").count() == 1, "robot-7 is revoked")
        log = MACHINES / "robot-7" / "agent.log"
        for _ in range(60):
            if "this device was revoked" in log.read_text():
                break
            fleet.wait_for_timeout(500)
        check("this device was revoked" in log.read_text(),
              "robot-7's agent was told its device was revoked")

        # Audit log, filtered.
        owner.goto(URL + "/console/audit?action=key.&since=24h")
        check(owner.locator("td code", has_text="key.create").count() >= 2, "the audit log lists key creations")
        check(owner.locator("td code", has_text="member.remove").count() == 0, "the action filter applies")
        accessible(owner, "Audit log")
        screenshot(owner, "audit")
        no_secret_in_html(owner_ctx, "owner at the end")

        owner.goto(URL + "/console/audit?action=console.")
        check(owner.locator("td code", has_text="console.signin").count() >= 3, "sign-ins are audited")

        # Sign out.
        owner.click("nav button[type=submit]")
        owner.wait_for_url("**/console/signin?ended=out")
        owner.goto(URL + "/console/keys")
        check(on_signin(owner), "signed out")
        browser.close()
    print("all console browser checks passed")


if __name__ == "__main__":
    main()
