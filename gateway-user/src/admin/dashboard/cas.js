// Bring-your-own CAs: upload (the API's validation errors shown as worded),
// the five-CA limit, hostname associations, the CRL source and its refresh
// status, and delete (refused, with the reason, while hostnames use the CA).

import { h, replace, field, table, section, say, act, when, button, confirmed, seg } from "./dom.js";
import { api, accountPath, associate, may, SSL_READ, SSL_WRITE } from "./api.js";

const LIMIT = 5;

function crlStatus(crl) {
  if (!crl) return "no CRL source";
  const parts = [h("div", { class: "mono" }, crl.source)];
  parts.push(h("div", {}, crl.fetched_on ? `fetched ${when(crl.fetched_on)}, ${Array.isArray(crl.revoked) ? crl.revoked.length : crl.revoked} revoked` : "not fetched yet"));
  if (crl.next_update) parts.push(h("div", {}, `next update ${when(crl.next_update)}`));
  if (crl.last_error) parts.push(h("div", { class: "error" }, `last refresh failed: ${crl.last_error}`));
  return parts;
}

function caPanel(ca, refresh) {
  const panel = h("div", { class: "panel ca", "data-ca": ca.id });
  const writable = may(SSL_WRITE);
  panel.append(h("h3", {}, ca.name || ca.id),
    h("p", {}, "Issuer ", h("span", { class: "mono" }, ca.issuer), " · expires ", when(ca.expires_on)),
    h("h4", {}, "Hostnames"),
    table(`Hostnames that accept certificates from ${ca.name || ca.id}`, [
      ["Hostname", (name) => h("span", { class: "mono" }, name)],
      ["", (name) => (writable ? button("Remove", act(panel, async () => {
        await associate(ca.id, ca.hostnames.filter((n) => n !== name));
        await refresh();
      }), { class: "secondary" }) : "")],
    ], ca.hostnames, "No hostname uses this CA."),
    h("h4", {}, "Revocation"), h("div", {}, crlStatus(ca.crl)));
  if (!writable) return panel;
  const host = h("input", { placeholder: "api.example.com" });
  const associateForm = h("form", { class: "associate", "aria-label": `Associate a hostname with ${ca.name || ca.id}` },
    field("Associate a hostname", host), h("button", { type: "submit" }, "Associate"));
  associateForm.addEventListener("submit", act(associateForm, async () => {
    await associate(ca.id, [...new Set([...ca.hostnames, host.value.trim()])]);
    await refresh();
  }));
  const source = h("input", { value: ca.crl?.source || "", placeholder: "http://crl.example/ca.crl or /etc/gateway/ca.crl" });
  const crl = h("form", { class: "crl-source", "aria-label": `CRL source of ${ca.name || ca.id}` }, field("CRL source", source),
    h("button", { type: "submit" }, "Set CRL source"),
    ca.crl ? button("Refresh CRL now", act(panel, async () => {
      await api("POST", accountPath(`mtls_certificates/${seg(ca.id)}/crl/refresh`));
      say("CRL refreshed.");
      await refresh();
    }), { class: "secondary" }) : null);
  crl.addEventListener("submit", act(crl, async () => {
    await api("PUT", accountPath(`mtls_certificates/${seg(ca.id)}/crl`), { source: source.value.trim() });
    say("CRL source set.");
    await refresh();
  }));
  const remove = confirmed("Delete CA", `Confirm: delete ${ca.name || ca.id}`, panel, async () => {
    await api("DELETE", accountPath(`mtls_certificates/${seg(ca.id)}`));
    say(`Deleted ${ca.name || ca.id}.`);
    await refresh();
  }, { class: "danger" });
  panel.append(associateForm, crl, remove);
  return panel;
}

function uploadForm(count, refresh) {
  const name = h("input", { id: "ca-name", placeholder: "partner root" });
  const pem = h("textarea", { id: "ca-pem", placeholder: "-----BEGIN CERTIFICATE-----" });
  const source = h("input", { id: "ca-crl", placeholder: "optional" });
  const full = count >= LIMIT;
  const form = h("form", { id: "upload-ca", "aria-label": "Upload a CA" }, h("h2", {}, "Upload a CA"),
    full ? h("p", { class: "error" }, `This account holds ${LIMIT} CAs, the most it may: delete one to upload another.`) : null,
    field("Name", name), field("CA certificate (PEM)", pem), field("CRL source", source),
    h("button", { type: "submit", disabled: full }, "Upload"));
  form.addEventListener("submit", act(form, async () => {
    const body = { ca: true, certificates: pem.value, name: name.value.trim() || undefined };
    if (source.value.trim()) body.crl_source = source.value.trim();
    await api("POST", accountPath("mtls_certificates"), body);
    say("CA uploaded.");
    await refresh();
  }));
  return form;
}

async function render(main) {
  const body = h("div");
  const refresh = async () => {
    const cas = (await api("GET", accountPath("mtls_certificates"))).result;
    replace(body,
      section(`Uploaded CAs (${cas.length} of ${LIMIT})`,
        cas.length ? cas.map((ca) => caPanel(ca, refresh)) : h("p", { class: "empty" }, "No CA uploaded.")),
      may(SSL_WRITE) ? uploadForm(cas.length, refresh) : null);
  };
  main.append(body);
  await refresh();
}

export default { path: "cas", title: "Bring-your-own CAs", needs: SSL_READ, render };
