"""Drives a real heex-cloud with a client generated from its OpenAPI document, then checks
that the document's constraints are the server's: for boundary and hostile values of every
constrained field, the schema accepts a request exactly when the server does.

Usage: python3 client_check.py DOCUMENT.json CLIENT_DIR
Environment: HEEX_URL (https://127.0.0.1:PORT), HEEX_CA (CA certificate file), HEEX_KEY (the
owner's admin key), HEEX_DEVICE (an enrolled device's id).
Every response is checked against the document: its status must be declared for the
operation and its body must match the declared schema. Exits 1 on the first mismatch.
"""

import json
import os
import ssl
import sys
import uuid

import httpx
from jsonschema import Draft202012Validator

DOC_PATH, CLIENT_DIR = sys.argv[1], sys.argv[2]
sys.path.insert(0, CLIENT_DIR)

from heex_api_client import AuthenticatedClient  # noqa: E402
from heex_api_client.api.devices import list_devices, show_device  # noqa: E402
from heex_api_client.api.keys import create_key, list_keys, revoke_key, whoami  # noqa: E402
from heex_api_client.api.members import list_members  # noqa: E402
from heex_api_client.models import (  # noqa: E402
    CreateKeyRequest,
    CreateKeyResponse,
    DeviceInfo,
    ErrorBody,
    ErrorCode,
    KeyInfo,
    KeyStatus,
    Role,
    Scope,
    WhoAmI,
)

URL = os.environ["HEEX_URL"]
KEY = os.environ["HEEX_KEY"]
DEVICE = os.environ["HEEX_DEVICE"]
TLS = ssl.create_default_context(cafile=os.environ["HEEX_CA"])

with open(DOC_PATH, encoding="utf-8") as f:
    DOC = json.load(f)


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def validator(schema):
    """A JSON Schema 2020-12 validator of `schema`, whose $refs point into the document."""
    return Draft202012Validator({**schema, "components": DOC["components"]})


def schema_errors(schema, value):
    return [e.message for e in validator(schema).iter_errors(value)]


# ---- the generated client against the real server ----------------------------------------

client = AuthenticatedClient(base_url=URL, token=KEY, verify_ssl=TLS, raise_on_unexpected_status=True)

me = whoami.sync(client=client)
check(isinstance(me, WhoAmI), f"whoami answered {me!r}")
check(me.role == "owner" and me.member_id.startswith("mem_"), f"whoami: {me.to_dict()}")

created = create_key.sync(
    client=client,
    body=CreateKeyRequest(name="generated client", scope=Scope.ENROLL, expires_in_days=7),
)
check(isinstance(created, CreateKeyResponse), f"create_key answered {created!r}")
check(created.key.startswith("heex_") and created.scope == Scope.ENROLL, f"created {created.to_dict()}")

listed = list_keys.sync(client=client).keys
mine = [k for k in listed if k.id == created.id]
check(len(mine) == 1 and mine[0].status == KeyStatus.ACTIVE, f"list_keys: {[k.to_dict() for k in listed]}")

revoked = revoke_key.sync(client=client, id=created.id)
check(isinstance(revoked, KeyInfo) and revoked.revoked_at is not None, f"revoke_key answered {revoked!r}")
after = [k for k in list_keys.sync(client=client).keys if k.id == created.id]
check(after[0].status == KeyStatus.REVOKED, f"after revoke: {after[0].to_dict()}")

# The revoked key itself now hears why, as an ErrorBody with a declared status.
dead = AuthenticatedClient(base_url=URL, token=created.key, verify_ssl=TLS, raise_on_unexpected_status=True)
refused = whoami.sync_detailed(client=dead)
check(refused.status_code == 401 and isinstance(refused.parsed, ErrorBody), f"revoked key: {refused!r}")
check(refused.parsed.error == ErrorCode.KEY_REVOKED, f"revoked key: {refused.parsed.to_dict()}")

missing = revoke_key.sync_detailed(client=client, id="AAAAAAAAAAAA")
check(missing.status_code == 404 and isinstance(missing.parsed, ErrorBody), f"unknown key: {missing!r}")

members = list_members.sync(client=client).members
check(any(m.id == me.member_id and m.role == Role.OWNER for m in members), f"members: {members!r}")

devices = list_devices.sync(client=client).devices
check(any(d.id == DEVICE for d in devices), f"devices: {[d.to_dict() for d in devices]}")
device = show_device.sync(client=client, id=DEVICE)
check(isinstance(device, DeviceInfo) and device.id == DEVICE, f"show_device answered {device!r}")

print("generated client: whoami, keys create/list/revoke, members, devices work")

# ---- every response matches the document ---------------------------------------------------

http = httpx.Client(base_url=URL, verify=TLS, timeout=30)


def operation(method, template):
    op = DOC["paths"].get(template, {}).get(method.lower())
    check(op is not None, f"{method} {template} is not in the document")
    return op


def call(method, template, path=None, body=None, params=None, key=KEY):
    """Sends one request and checks the answer against the document; returns (status, json)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = http.request(method, path or template, json=body, params=params, headers=headers)
    op = operation(method, template)
    declared = op["responses"].get(str(response.status_code))
    check(
        declared is not None,
        f"{method} {path or template} answered {response.status_code}, which the document does "
        f"not declare (declared: {sorted(op['responses'])}): {response.text[:300]}",
    )
    value = response.json() if response.content else None
    schema = declared.get("content", {}).get("application/json", {}).get("schema")
    if schema is not None:
        errors = schema_errors(schema, value)
        check(not errors, f"{method} {path or template} {response.status_code}: body {errors[:3]}: {value}")
    return response.status_code, value


def request_schema(method, template):
    content = operation(method, template)["requestBody"]["content"]["application/json"]
    return content["schema"]


def param_schema(method, template, name):
    for p in operation(method, template).get("parameters", []):
        if p["name"] == name:
            return p["schema"]
    fail(f"{method} {template} has no parameter {name}")


verdicts = {"accepted": 0, "refused": 0}


def agree(what, valid, accepted, lenient=False):
    """The schema's verdict and the server's agree (or the server is knowingly more lenient)."""
    verdicts["accepted" if accepted else "refused"] += 1
    if valid and not accepted:
        fail(f"{what}: the document allows it but the server refused it")
    if not valid and accepted and not lenient:
        fail(f"{what}: the document refuses it but the server accepted it")


def unique(prefix=""):
    return prefix + uuid.uuid4().hex[:8]


# Human names (keys, devices): length in characters, not blank, no control characters.
NAMES = [
    ("", False),
    ("   ", False),
    ("\u00a0", False),  # no-break space: blank
    ("a", False),
    ("a\u0007b", False),
    ("a\u007fb", False),
    ("a\u0085b", False),
    ("a\nb", False),
    ("a\u202eb", False),  # bidi override
    ("a\u200bb", False),  # zero-width space
    ("\u00e9", False),
    ("\U0001f916", False),
]


def name_samples(max_len):
    samples = [(value, False) for value, _ in NAMES]
    samples += [("x" * max_len, False), ("x" * (max_len + 1), False)]
    samples += [("\u00e9" * max_len, False), ("\u00e9" * (max_len + 1), False)]
    # The server trims surrounding spaces before counting; the document counts them.
    samples += [(" " + "x" * max_len, True), ("  padded  ", False)]
    return samples


create_schema = request_schema("POST", "/v1/keys")
key_name_max = DOC["components"]["schemas"]["CreateKeyRequest"]["properties"]["name"]["maxLength"]
for name, lenient in name_samples(key_name_max):
    body = {"name": name}
    status, _ = call("POST", "/v1/keys", body=body)
    agree(f"key name {name!r}", not schema_errors(create_schema, body), status == 201, lenient)

INTEGERS = [-1, 0, 1, 7, 365, 366, 86_400, 31_536_000, 31_536_001, 2**63 - 1, 2**63, 2**64]
for field in ["expires_in_days", "expires_in_secs", "max_uses"]:
    for n in INTEGERS:
        body = {"name": "bounds", field: n}
        status, _ = call("POST", "/v1/keys", body=body)
        agree(f"{field}={n}", not schema_errors(create_schema, body), status == 201)
for body in [{"name": "x", "bogus": 1}, {"name": "x", "scope": "root"}, {"name": "x", "scope": "admin"}, {}]:
    status, _ = call("POST", "/v1/keys", body=body)
    agree(f"create key {body}", not schema_errors(create_schema, body), status == 201)

rotate_schema = request_schema("POST", "/v1/keys/{id}/rotate")
for overlap in [-1, 0, 3600, 2_592_000, 2_592_001, 2**64]:
    body = {"overlap_secs": overlap}
    _, fresh = call("POST", "/v1/keys", body={"name": "to rotate", "scope": "enroll"})
    status, _ = call("POST", "/v1/keys/{id}/rotate", f"/v1/keys/{fresh['id']}/rotate", body=body)
    agree(f"overlap_secs={overlap}", not schema_errors(rotate_schema, body), status == 201)

invite_schema = request_schema("POST", "/v1/invitations")
email_max = DOC["components"]["schemas"]["InviteRequest"]["properties"]["email"]["maxLength"]


def email_samples():
    u = unique()
    yield f"{u}@example.com"
    yield f"{u}@localhost"
    yield u + "x" * (email_max - len(u) - 2) + "@b"  # exactly the limit
    yield u + "x" * (email_max - len(u) - 1) + "@b"  # one over
    yield u + "\u00e9" * 200 + "@b.example"  # within the limit in characters, not in bytes
    for bad in ["{}", "{} x@b", "{}@b@c", "@{}", "{}@", "{}\u0007@b", "{}\u00a0x@b", "{}\u202e@b", "{}\u200b@b"]:
        yield bad.format(u)


for email in email_samples():
    body = {"email": email}
    status, _ = call("POST", "/v1/invitations", body=body)
    agree(f"email {email!r}", not schema_errors(invite_schema, body), status == 201)
for n in [-1, 0, 1, 2_592_000, 2_592_001, 2**64]:
    body = {"email": f"{unique()}@example.com", "expires_in_secs": n}
    status, _ = call("POST", "/v1/invitations", body=body)
    agree(f"invitation expires_in_secs={n}", not schema_errors(invite_schema, body), status == 201)

# Acceptance: an unknown but well-formed token is refused for being unknown; a malformed
# token or key name is refused before that.
accept_schema = request_schema("POST", "/v1/invitations/accept")
well_formed = "heexinv_" + "A" * 32


def accepted_shape(status, value):
    return status == 400 and "is not valid" in value["message"]


for token in [well_formed, well_formed[:-1], well_formed + "A", "heex_" + "A" * 35, well_formed[:-1] + "-", ""]:
    body = {"token": token}
    status, value = call("POST", "/v1/invitations/accept", body=body, key=None)
    agree(f"token {token!r}", not schema_errors(accept_schema, body), accepted_shape(status, value))
for name, lenient in name_samples(key_name_max):
    body = {"token": well_formed, "key_name": name}
    status, value = call("POST", "/v1/invitations/accept", body=body, key=None)
    # Blank key names mean "cli".
    agree(f"key_name {name!r}", not schema_errors(accept_schema, body), accepted_shape(status, value), lenient)

# Devices: names and labels, through rename/relabel and through enrollment (whose CSR check
# comes after them: a bad CSR means the name and labels passed).
update_schema = request_schema("PATCH", "/v1/devices/{id}")
enroll_schema = request_schema("POST", "/v1/enroll")
device_path = f"/v1/devices/{DEVICE}"
device_name_max = DOC["components"]["schemas"]["EnrollRequest"]["properties"]["name"]["maxLength"]
BOGUS_CSR = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"


def label_samples():
    yield {}
    yield {"site": "lab-3", "team/robots": "", "a.b_c-d": "x" * 256}
    yield {"k" * 63: "v"}
    yield {"k" * 64: "v"}
    yield {"": "v"}
    yield {"bad key": "v"}
    yield {"caf\u00e9": "v"}
    yield {"k": "x" * 257}
    yield {"k": "\u00e9" * 256}
    yield {"k": "a\nb"}
    yield {"k": "a\u202eb"}
    yield {f"k{i}": "" for i in range(64)}
    yield {f"k{i}": "" for i in range(65)}


for name, lenient in name_samples(device_name_max):
    body = {"name": name}
    status, _ = call("PATCH", "/v1/devices/{id}", device_path, body=body)
    agree(f"device name {name!r}", not schema_errors(update_schema, body), status == 200, lenient)
    body = {"csr_pem": BOGUS_CSR, "name": name}
    status, value = call("POST", "/v1/enroll", body=body)
    passed = status == 400 and value["error"] == "bad_csr"
    agree(f"enroll name {name!r}", not schema_errors(enroll_schema, body), passed, lenient)
for labels in label_samples():
    body = {"labels": labels}
    status, _ = call("PATCH", "/v1/devices/{id}", device_path, body=body)
    agree(f"labels {labels!r:.80}", not schema_errors(update_schema, body), status == 200)
    body = {"csr_pem": BOGUS_CSR, "name": "x", "labels": labels}
    status, value = call("POST", "/v1/enroll", body=body)
    passed = status == 400 and value["error"] == "bad_csr"
    agree(f"enroll labels {labels!r:.80}", not schema_errors(enroll_schema, body), passed)
for body in [{}, {"name": None}, {"name": "x", "bogus": 1}]:
    status, _ = call("PATCH", "/v1/devices/{id}", device_path, body=body)
    agree(f"update {body}", not schema_errors(update_schema, body), status == 200)

# Query parameters.
for template, path, name, values in [
    ("/v1/audit", "/v1/audit", "limit", [0, 1, 1000, 1001, -1]),
    ("/v1/devices/{id}/reports", f"{device_path}/reports", "limit", [0, 1, 1000, 1001]),
    ("/v1/devices/{id}/reports", f"{device_path}/reports", "after", [0, 2**63 - 1, 2**63]),
]:
    schema = param_schema("GET", template, name)
    for n in values:
        status, _ = call("GET", template, path, params={name: str(n)})
        agree(f"GET {template}?{name}={n}", not schema_errors(schema, n), status == 200)

# Errors every operation may meet: no key, an oversized body, a body that is not JSON.
for template, item in DOC["paths"].items():
    for method, op in item.items():
        path = template.replace("{id}", DEVICE if "devices" in template else "AAAAAAAAAAAA")
        if op.get("security"):
            call(method.upper(), template, path, key=None)
            call(method.upper(), template, path, key="heex_" + "A" * 44)
        if "requestBody" in op:
            response = http.request(method.upper(), path, content=b"{" * 70_000, headers={
                "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
            check(str(response.status_code) in op["responses"], f"{method} {path} oversized: {response.status_code}")
            response = http.request(method.upper(), path, content=b"{not json", headers={
                "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
            check(str(response.status_code) in op["responses"], f"{method} {path} not JSON: {response.status_code}")

check(min(verdicts.values()) > 0, f"one-sided samples: {verdicts}")
print(
    f"document and server agree on {sum(verdicts.values())} boundary values "
    f"({verdicts['accepted']} accepted, {verdicts['refused']} refused)"
)
