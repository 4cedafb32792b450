"""The seeds' flows through Cloudflare's official Python SDK, against a gateway.

Run by tests/tests/sdk_flows.rs with the pinned SDK (scripts/setup.sh makes
its environment). Every response is validated strictly against the SDK's own
model (its required fields present and well typed), every list is walked the
SDK's way (it must end), and the mTLS rule made through the SDK is checked in
force with curl. Exits non-zero, saying which step failed, on any failure.
"""

import json
import os
import subprocess
import sys
import tempfile

import pydantic

from cloudflare import Cloudflare
from cloudflare.types.certificate_authorities import HostnameAssociationGetResponse
from cloudflare.types.client_certificates import ClientCertificate
from cloudflare.types.custom_hostnames import (
    CustomHostnameCreateResponse,
    CustomHostnameEditResponse,
    CustomHostnameGetResponse,
    CustomHostnameListResponse,
)
from cloudflare.types.mtls_certificates import (
    CertificateAsssociation,
    MTLSCertificate,
    MTLSCertificateCreateResponse,
)
from cloudflare.types.rulesets import PhaseGetResponse, RulesetListResponse, VersionListResponse
# `RuleCreateResponse` is `Union[Ruleset, object]` (the SDK hands back a dict):
# anything parses as the object, so the answer is checked against the ruleset.
from cloudflare.types.rulesets.rule_create_response import Ruleset as RuleCreateResponse
from cloudflare.types.shared import AuditLog, Token
from cloudflare.types.user import TokenCreateResponse, TokenVerifyResponse
from cloudflare.types.user.tokens import PermissionGroupListResponse
from cloudflare.types.zones import Zone
from cloudflare.types.zones.ciphers import Ciphers
from cloudflare.types.zones.min_tls_version import MinTLSVersion
from cloudflare.types.rulesets.ruleset_get_response import RulesetGetResponse
from cloudflare.types.rulesets.ruleset_update_response import Ruleset as RulesetUpdateResponse
from cloudflare.types.rulesets.version_get_response import VersionGetResponse
from cloudflare.types.rulesets.rule_edit_response import Ruleset as RuleEditResponse
from cloudflare.types.rulesets.rule_delete_response import Ruleset as RuleDeleteResponse
import cloudflare

ENV = os.environ
API = ENV["GATEWAY_API"]
ZONE = ENV["GATEWAY_ZONE"]
ACCOUNT = ENV["GATEWAY_ACCOUNT"]
TLS_PORT = ENV["GATEWAY_TLS_PORT"]
SERVER_CA = ENV["GATEWAY_SERVER_CA"]
PRELOADED = int(ENV["GATEWAY_PRELOADED"])
PHASE = "http_request_firewall_custom"

client = Cloudflare(api_token=ENV["GATEWAY_TOKEN"], base_url=API, max_retries=0)
work = tempfile.mkdtemp(prefix="sdk-flows-")
steps = []


def step(name):
    steps.append(name)
    print(f"step {len(steps)}: {name}", flush=True)


def strict(model, obj):
    """The object validated strictly against its model (or the type the SDK
    names): required fields present, types right. Returns the model."""
    data = obj.to_dict() if hasattr(obj, "to_dict") else obj
    return pydantic.TypeAdapter(model).validate_python(data)


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=work)


def read(name):
    with open(os.path.join(work, name)) as f:
        return f.read()


def curl(host, *extra):
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
         "--cacert", SERVER_CA, "--resolve", f"{host}:{TLS_PORT}:127.0.0.1",
         *extra, f"https://{host}:{TLS_PORT}/"],
        capture_output=True, text=True, cwd=work,
    )
    return out.stdout.strip()


step("zones: list ends and each zone is a Zone; get")
zones = [strict(Zone, z) for z in client.zones.list()]
assert [z.id for z in zones] == [ZONE], zones
assert client.zones.get(zone_id=ZONE).id == ZONE

step(f"custom hostnames: auto-pagination over {PRELOADED + 1} ends, each once")
seen = [strict(CustomHostnameListResponse, h).id for h in client.custom_hostnames.list(zone_id=ZONE)]
assert len(seen) == PRELOADED + 1 and len(set(seen)) == len(seen), len(seen)
small = [h.id for h in client.custom_hostnames.list(zone_id=ZONE, per_page=7)]
assert sorted(small) == sorted(seen), "per_page=7 walks the same hostnames"
page = client.custom_hostnames.list(zone_id=ZONE, per_page=50, page=2)
assert len(page.result) == 50 and page.result_info.page == 2, page.result_info

step("custom hostnames: filters")
exact = list(client.custom_hostnames.list(zone_id=ZONE, hostname={"exact": "h7.preloaded.test"}))
assert [h.hostname for h in exact] == ["h7.preloaded.test"], exact
by_id = list(client.custom_hostnames.list(zone_id=ZONE, id=exact[0].id))
assert [h.id for h in by_id] == [exact[0].id]
prefix = list(client.custom_hostnames.list(zone_id=ZONE, hostname={"starts_with": "h19"}))
assert sorted(h.hostname for h in prefix) == sorted(
    f"h{i}.preloaded.test" for i in range(PRELOADED) if str(i).startswith("19")
), [h.hostname for h in prefix]

step("custom hostnames: create, get, edit the minimum TLS version")
api = strict(CustomHostnameCreateResponse, client.custom_hostnames.create(
    zone_id=ZONE, hostname="api.example.com", ssl={"method": "http", "type": "dv"}))
strict(CustomHostnameGetResponse, client.custom_hostnames.get(api.id, zone_id=ZONE))
edited = strict(CustomHostnameEditResponse, client.custom_hostnames.edit(
    api.id, zone_id=ZONE, ssl={"settings": {"min_tls_version": "1.2"}}))
assert edited.ssl.settings.min_tls_version == "1.2", edited.ssl
other = client.custom_hostnames.create(zone_id=ZONE, hostname="b.example.com")

step("bring your own CA: upload, list, get, its associations")
openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "corp.key", "-out", "corp.pem", "-days", "30", "-subj", "/CN=corp CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign,cRLSign")
corp = strict(MTLSCertificateCreateResponse, client.mtls_certificates.create(
    account_id=ACCOUNT, ca=True, certificates=read("corp.pem"), name="corp"))
listed = [strict(MTLSCertificate, c).id for c in client.mtls_certificates.list(account_id=ACCOUNT)]
assert listed == [corp.id], listed
strict(MTLSCertificate, client.mtls_certificates.get(corp.id, account_id=ACCOUNT))
assert list(client.mtls_certificates.associations.get(corp.id, account_id=ACCOUNT)) == []

step("hostname associations: the managed CA for api, corp for b")
hostname_associations = client.certificate_authorities.hostname_associations
strict(HostnameAssociationGetResponse, hostname_associations.update(
    zone_id=ZONE, hostnames=["api.example.com"]))
strict(HostnameAssociationGetResponse, hostname_associations.update(
    zone_id=ZONE, hostnames=["b.example.com"], mtls_certificate_id=corp.id))
got = strict(HostnameAssociationGetResponse, hostname_associations.get(
    zone_id=ZONE, mtls_certificate_id=corp.id))
assert got.hostnames == ["b.example.com"], got
services = [strict(CertificateAsssociation, a).service
            for a in client.mtls_certificates.associations.get(corp.id, account_id=ACCOUNT)]
assert services == ["b.example.com"], services

step("client certificates: from a CSR; list by status; revoke; reactivate")
openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "alice.key", "-out", "alice.csr", "-subj", "/CN=alice")
alice = strict(ClientCertificate, client.client_certificates.create(
    zone_id=ZONE, csr=read("alice.csr"), validity_days=30))
with open(os.path.join(work, "alice.pem"), "w") as f:
    f.write(alice.certificate)
active = [strict(ClientCertificate, c).id
          for c in client.client_certificates.list(zone_id=ZONE, status="active")]
assert alice.id in active, active
revoked = strict(ClientCertificate, client.client_certificates.delete(alice.id, zone_id=ZONE))
assert revoked.status == "revoked", revoked.status
assert [c.id for c in client.client_certificates.list(zone_id=ZONE, status="revoked")] == [alice.id]
back = strict(ClientCertificate, client.client_certificates.edit(alice.id, zone_id=ZONE))
assert back.status == "active", back.status

step("the mTLS rule, made through the SDK, is in force")
entry = strict(PhaseGetResponse, client.rulesets.phases.get(PHASE, zone_id=ZONE))
made = strict(RuleCreateResponse, client.rulesets.rules.create(
    entry.id, zone_id=ZONE, action="block",
    expression='(http.host in {"api.example.com"} and not cf.tls_client_auth.cert_verified)',
    description="mTLS for api.example.com"))
assert made.version != entry.version and len(made.rules) == len(entry.rules) + 1, made
assert [strict(RulesetListResponse, r).id for r in client.rulesets.list(zone_id=ZONE)] == [entry.id]
versions = [strict(VersionListResponse, v).version
            for v in client.rulesets.versions.list(entry.id, zone_id=ZONE)]
assert made.version in versions and entry.version in versions, versions
without = curl("api.example.com")
assert without == "403", f"without a certificate: {without}"
with_cert = curl("api.example.com", "--cert", "alice.pem", "--key", "alice.key")
assert with_cert != "403", f"with alice's certificate: {with_cert}"

step("a bad expression is refused with its position")
try:
    client.rulesets.rules.create(entry.id, zone_id=ZONE, action="block", expression="http.host eq")
    raise AssertionError("a bad expression was accepted")
except Exception as e:  # the SDK's BadRequestError
    body = getattr(e, "body", None) or {}
    error = (body.get("errors") or [{}])[0] if isinstance(body, dict) else {}
    assert getattr(e, "status_code", None) == 400, e
    assert error.get("source", {}).get("column"), error

step("zone settings: minimum TLS version and ciphers, read and changed")
strict(MinTLSVersion, client.zones.settings.get("min_tls_version", zone_id=ZONE))
tls = strict(MinTLSVersion, client.zones.settings.edit("min_tls_version", zone_id=ZONE, value="1.2"))
assert tls.value == "1.2", tls
ciphers = strict(Ciphers, client.zones.settings.edit(
    "ciphers", zone_id=ZONE, value=["ECDHE-ECDSA-AES128-GCM-SHA256"]))
assert ciphers.value == ["ECDHE-ECDSA-AES128-GCM-SHA256"], ciphers
strict(Ciphers, client.zones.settings.edit("ciphers", zone_id=ZONE, value=[]))

step("rulesets: get, a rule edited and deleted, a version read back, the whole list replaced")
got = strict(RulesetGetResponse, client.rulesets.get(entry.id, zone_id=ZONE))
rule_id = got.rules[0].id
edited = strict(RuleEditResponse, client.rulesets.rules.edit(
    rule_id, ruleset_id=entry.id, zone_id=ZONE, action="block",
    expression='(http.host in {"api.example.com"} and not cf.tls_client_auth.cert_verified)',
    description="mTLS, edited"))
assert edited.rules[0].description == "mTLS, edited" and edited.rules[0].version == "2", edited.rules[0]
old = strict(VersionGetResponse, client.rulesets.versions.get(made.version, ruleset_id=entry.id, zone_id=ZONE))
assert old.rules[0].description == "mTLS for api.example.com", old.rules[0]
replaced = strict(RulesetUpdateResponse, client.rulesets.update(entry.id, zone_id=ZONE, rules=[
    {"id": rule_id, "action": "block",
     "expression": '(http.host in {"api.example.com"} and not cf.tls_client_auth.cert_verified)'},
    {"action": "log", "expression": 'http.request.uri.path eq "/audit"'},
]))
assert [r.action for r in replaced.rules] == ["block", "log"], replaced.rules
logged_rule = replaced.rules[1].id
strict(RuleDeleteResponse, client.rulesets.rules.delete(logged_rule, ruleset_id=entry.id, zone_id=ZONE))
strict(PhaseGetResponse, client.rulesets.phases.get(PHASE, zone_id=ZONE))
assert curl("api.example.com") == "403", "the rule is still in force"

step("deletes: a hostname, a CA (after its associations), a client certificate revoked and read")
client.certificate_authorities.hostname_associations.update(
    zone_id=ZONE, hostnames=[], mtls_certificate_id=corp.id)
strict(MTLSCertificate, client.mtls_certificates.delete(corp.id, account_id=ACCOUNT))
assert list(client.mtls_certificates.list(account_id=ACCOUNT)) == []
client.custom_hostnames.delete(other.id, zone_id=ZONE)
assert not list(client.custom_hostnames.list(zone_id=ZONE, id=other.id))
strict(ClientCertificate, client.client_certificates.get(alice.id, zone_id=ZONE))

step("scoped tokens: a read-only token reads, may not write, is rolled and deleted")
groups = {strict(PermissionGroupListResponse, g).name: g.id
          for g in client.user.tokens.permission_groups.list()}
read_only = strict(TokenCreateResponse, client.user.tokens.create(
    name="reader", policies=[{"effect": "allow", "permission_groups": [{"id": groups["SSL and Certificates Read"]}],
                              "resources": {f"com.cloudflare.api.account.zone.{ZONE}": "*"}}]))
reader = Cloudflare(api_token=read_only.value, base_url=API, max_retries=0)
assert strict(TokenVerifyResponse, reader.user.tokens.verify()).status == "active"
assert len(list(reader.custom_hostnames.list(zone_id=ZONE))) == PRELOADED + 2
try:
    reader.custom_hostnames.create(zone_id=ZONE, hostname="no.example.com")
    raise AssertionError("a read-only token created a hostname")
except cloudflare.PermissionDeniedError as e:
    assert "SSL and Certificates Write" in str(e), e
assert any(strict(Token, t).id == read_only.id for t in client.user.tokens.list())
assert strict(Token, client.user.tokens.get(read_only.id)).name == "reader"
renamed = strict(Token, client.user.tokens.update(
    read_only.id, name="reader, renamed",
    policies=[{"effect": "allow", "permission_groups": [{"id": groups["SSL and Certificates Read"]}],
               "resources": {f"com.cloudflare.api.account.zone.{ZONE}": "*"}}]))
assert renamed.name == "reader, renamed", renamed
new_secret = client.user.tokens.value.update(read_only.id)
assert isinstance(new_secret, str) and new_secret != read_only.value
client.user.tokens.delete(read_only.id)
try:
    Cloudflare(api_token=new_secret, base_url=API, max_retries=0).user.tokens.verify()
    raise AssertionError("a deleted token still works")
except cloudflare.PermissionDeniedError:
    pass

step("the audit log lists every change, newest first, and ends")
logged = [strict(AuditLog, e) for e in client.audit_logs.list(account_id=ACCOUNT, per_page=5)]
calls = [e.action.type for e in logged]
assert calls[0].startswith("DELETE user/tokens/"), calls[:3]
assert f"POST zones/{ZONE}/rulesets/{entry.id}/rules" in calls, calls
assert calls[-1] == "- gateway rotate-token", calls[-1]  # the test's set-up rotated it
assert calls[-2] == f"POST zones/{ZONE}/custom_hostnames", calls[-2]

print(json.dumps({"steps": len(steps), "hostnames": len(seen)}))
