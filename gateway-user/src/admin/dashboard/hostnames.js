// Custom hostnames: the paged, filterable list (minimum TLS, ciphers, mTLS,
// CAs, certificate and expiry), and add, edit and delete.

import { h, replace, field, select, table, section, say, act, when, button, confirmed, seg } from "./dom.js";
import { api, zonePath, accountPath, may, SSL_READ, SSL_WRITE } from "./api.js";

export const VERSIONS = [["1.0", "TLS 1.0"], ["1.1", "TLS 1.1"], ["1.2", "TLS 1.2"], ["1.3", "TLS 1.3"]];
export const RESUMPTION = [["true", "On"], ["false", "Off"]];
const FORWARDING = [["none", "Not forwarded"], ["cloudflare", "Cf-Client-Cert-* headers"], ["rfc9440", "RFC 9440 Client-Cert"]];
const PER_PAGE = 20;

/** The CA names by id: the managed CA and the uploaded ones. */
async function caNames() {
  const names = new Map();
  const managed = (await api("GET", zonePath("managed_ca"))).result;
  names.set(managed.id, `${managed.name} (managed)`);
  for (const ca of (await api("GET", accountPath("mtls_certificates"))).result) names.set(ca.id, ca.name || ca.id);
  return names;
}

/** The add and edit form's fields, from a hostname (or none). */
function settingsFields(host) {
  const settings = host?.ssl?.settings || {};
  return {
    minTls: select([["", "The zone's"], ...VERSIONS], settings.min_tls_version || "", { name: "min_tls_version" }),
    ciphers: h("input", { name: "ciphers", value: (settings.ciphers || []).join(", "), placeholder: "the zone's" }),
    resumption: select([["", "The zone's"], ...RESUMPTION], settings.session_resumption == null ? "" : String(settings.session_resumption), { name: "session_resumption" }),
    origin: h("input", { name: "origin", value: host?.custom_origin_server || "", placeholder: "http://127.0.0.1:8080" }),
    forwarding: select(FORWARDING, host?.mtls?.forward_client_cert || "none", { name: "forward_client_cert" }),
  };
}

function settingsBody(f) {
  const ciphers = f.ciphers.value.split(/[\s,]+/).filter(Boolean);
  return {
    ssl: { settings: { min_tls_version: f.minTls.value || null, ciphers, session_resumption: f.resumption.value === "" ? null : f.resumption.value === "true" } },
    custom_origin_server: f.origin.value.trim() || null,
    mtls: { forward_client_cert: f.forwarding.value },
  };
}

function settingsControls(f) {
  return [
    field("Minimum TLS version", f.minTls),
    field("Cipher suites", f.ciphers, "BoringSSL names, comma-separated; empty: the zone's."),
    field("Session resumption", f.resumption),
    field("Origin", f.origin, "Where requests go; empty: the gateway's default origin."),
    field("Client certificate to the origin", f.forwarding),
  ];
}

function addForm(refresh) {
  const name = h("input", { name: "hostname", required: true, placeholder: "api.example.com" });
  const f = settingsFields(null);
  const form = h("form", { id: "add-hostname", "aria-label": "Add a hostname" }, h("h2", {}, "Add a hostname"),
    field("Hostname", name), settingsControls(f), h("button", { type: "submit" }, "Add hostname"));
  form.addEventListener("submit", act(form, async () => {
    await api("POST", zonePath("custom_hostnames"), { hostname: name.value.trim(), ...settingsBody(f) });
    say(`Added ${name.value.trim()}.`);
    form.reset();
    await refresh();
  }));
  return form;
}

function editForm(host, where, refresh) {
  const f = settingsFields(host);
  const form = h("form", { class: "edit-hostname", "aria-label": `Edit ${host.hostname}` },
    h("h2", {}, `Edit ${host.hostname}`), settingsControls(f),
    h("button", { type: "submit" }, "Save"), button("Cancel", () => form.remove(), { class: "secondary" }));
  form.addEventListener("submit", act(form, async () => {
    await api("PATCH", zonePath(`custom_hostnames/${seg(host.id)}`), settingsBody(f));
    say(`Saved ${host.hostname}.`);
    await refresh();
  }));
  where.querySelectorAll(".edit-hostname").forEach((e) => e.remove());
  where.prepend(form);
  f.minTls.focus();
}

function actions(host, where, refresh) {
  if (!may(SSL_WRITE)) return "";
  const remove = confirmed("Delete", `Confirm: delete ${host.hostname}`, where, async () => {
    await api("DELETE", zonePath(`custom_hostnames/${seg(host.id)}`));
    say(`Deleted ${host.hostname}.`);
    await refresh();
  }, { class: "danger", disabled: host.default, title: host.default ? "The default hostname cannot be deleted" : null });
  return [button("Edit", () => editForm(host, where, refresh), { class: "edit" }), remove];
}

function columns(names, where, refresh) {
  return [
    ["Hostname", (x) => h("span", { class: "mono" }, x.hostname, x.default ? " (default)" : "")],
    ["Minimum TLS", (x) => x.ssl.settings.min_tls_version || `${x.ssl.settings.effective_min_tls_version} (zone)`],
    ["Ciphers", (x) => (x.ssl.settings.ciphers?.length ? x.ssl.settings.ciphers.join(", ") : "zone's")],
    ["mTLS", (x) => h("span", { class: x.mtls.enabled ? "on" : "off" }, x.mtls.enabled ? "on" : "off")],
    ["CAs", (x) => x.mtls.certificate_authorities.map((id) => names.get(id) || id).join(", ") || "—"],
    ["Certificate", certificate],
    ["Expires", (x) => when(x.ssl.expires_on)],
    ["", (x) => actions(x, where, refresh)],
  ];
}

async function render(main) {
  const names = await caNames();
  const filter = h("input", { type: "search", id: "hostname-filter", placeholder: "part of a name" });
  const list = h("div", { id: "hostname-list" });
  const pager = h("div", { class: "pager" });
  let page = 1;
  let asked = 0;
  const refresh = async () => {
    const mine = ++asked;
    const q = filter.value.trim() ? `&hostname.contain=${encodeURIComponent(filter.value.trim())}` : "";
    const fetchPage = () => api("GET", zonePath(`custom_hostnames?page=${page}&per_page=${PER_PAGE}${q}`));
    let { result, result_info: info } = await fetchPage();
    if (!result.length && page > 1 && info.total_pages >= 1) {
      // The last page emptied (a delete): show the new last page.
      page = info.total_pages;
      ({ result, result_info: info } = await fetchPage());
    }
    if (mine !== asked) return; // a later refresh overtook this one
    replace(list, table(`Hostnames ${info.count ? `${(page - 1) * PER_PAGE + 1}–${(page - 1) * PER_PAGE + info.count}` : ""} of ${info.total_count}`,
      columns(names, main, refresh), result, "No hostname matches."));
    replace(pager,
      button("Previous page", act(pager, async () => { page -= 1; await refresh(); }), { class: "secondary", disabled: page <= 1 }),
      `Page ${info.page} of ${Math.max(1, info.total_pages)}`,
      button("Next page", act(pager, async () => { page += 1; await refresh(); }), { class: "secondary", disabled: page >= info.total_pages }));
  };
  let typing;
  const filtered = act(list, async () => { page = 1; await refresh(); });
  filter.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(filtered, 200); });
  main.append(section("Hostnames", field("Filter by name", filter), list, pager));
  if (may(SSL_WRITE)) main.append(addForm(refresh));
  await refresh();
}

export default { path: "hostnames", title: "Custom hostnames", needs: SSL_READ, render };

/** Where a hostname's certificate comes from (ACME: with its status). */
function certificate(x) {
  if (x.ssl.certificate_source === "acme") return `ACME (${x.ssl.status})`;
  return x.ssl.issued_by === "gateway" ? "issued by the gateway" : "uploaded";
}
