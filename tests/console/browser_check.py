"""The web console in a real browser (Debian's Chromium driven by Playwright).

Run by tests/tests/console_browser.rs against a real heex-cloud; it reads what it needs from
the environment and never prints a key or a token. Exit status 0 means every check passed;
otherwise the failed check is the last line of stderr.

HEEX_URL, HEEX_OWNER_KEY, HEEX_FINGERPRINT, HEEX_INSTALLER, HEEX_MACHINE_DIR, HEEX_RESULT
(a file where the enrolled device id and the key id that enrolled it are written).
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
         "/console/add-device"]
SECRETS = [OWNER_KEY]


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


def main():
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
        no_secret_in_html(owner_ctx, "owner")

        # The real installer enrolls a machine with the key read from the clipboard.
        machine = Path(os.environ["HEEX_MACHINE_DIR"])
        env = dict(os.environ, HEEX_API_KEY=clipboard(owner))
        env.pop("HEEX_API_KEY_FILE", None)
        done = subprocess.run(
            [os.environ["HEEX_INSTALLER"], "--server", URL, "--ca-fingerprint",
             os.environ["HEEX_FINGERPRINT"], "--name", "robot-7", "--config-dir",
             str(machine / "etc"), "--state-dir", str(machine / "state")],
            env=env, capture_output=True, text=True, timeout=120)
        check(done.returncode == 0, f"the installer enrolled with the copied key: {done.stderr[-500:]}")
        Path(os.environ["HEEX_RESULT"]).write_text(json.dumps({"key_id": new_key[5:17]}))

        # Copy again: re-derived, the same key.
        owner.goto(URL + "/console/keys")
        key_id = new_key[5:17]
        copied = reveal(owner, f"form[action='/console/keys/{key_id}/copy'] button")
        check(copied == new_key and clipboard(owner) == new_key, "Copy gives the same key again")

        # Add device: the commands carry the key, each with a copy button.
        owner.goto(URL + "/console/add-device")
        accessible(owner, "Add device")
        owner.select_option("#enroll-key", key_id)
        owner.click("#pick-key button[type=submit]")
        owner.wait_for_selector("#commands:not([hidden])")
        docker = owner.text_content("#cmd-docker")
        check(f"-e HEEX_API_KEY='{new_key}'" in docker, "the docker command carries the key")
        check("heex-installer --systemd" in owner.text_content("#cmd-installer"), "installer line")
        check("HEEX_API_KEY" in owner.text_content("#cmd-compose"), "compose snippet")
        owner.click("button[data-copy=cmd-docker]")
        expect(owner.locator("button[data-copy=cmd-docker]")).to_have_text("Copied")
        check(clipboard(owner) == docker, "the docker command is copied")
        accessible(owner, "Add device with commands")

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

        # The owner removes bob, with a confirmation saying exactly what happens.
        owner.goto(URL + "/console/settings")
        messages.clear()
        owner.click("button[aria-label='Remove bob@example.com']")
        owner.wait_for_url("**/console/settings?done=removed")
        check(any("Their 1 key is revoked; the 0 machines they enrolled keep running." in m
                  for m in messages), f"the removal confirmation says what happens: {messages}")
        check(owner.locator("tbody td:first-child", has_text="bob@example.com").count() == 0, "bob is gone")

        # Bob's next page load lands on sign-in.
        bob.reload()
        check(on_signin(bob) and "ended=key" in bob.url, "bob's session died with his removal")

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

        # Audit log, filtered.
        owner.goto(URL + "/console/audit?action=key.&since=24h")
        check(owner.locator("td code", has_text="key.create").count() >= 2, "the audit log lists key creations")
        check(owner.locator("td code", has_text="member.remove").count() == 0, "the action filter applies")
        accessible(owner, "Audit log")
        no_secret_in_html(owner_ctx, "owner at the end")

        # Sign out.
        owner.click("nav button[type=submit]")
        owner.wait_for_url("**/console/signin?ended=out")
        owner.goto(URL + "/console/keys")
        check(on_signin(owner), "signed out")
        browser.close()
    print("all console browser checks passed")


if __name__ == "__main__":
    main()
