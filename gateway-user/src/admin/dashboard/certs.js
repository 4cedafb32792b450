// Client Certificates, as the reference's card: the managed CA, the issued
// certificates (create with a generated key or from a CSR; revoke and
// reactivate), and the Hosts that require a certificate from it.

import { h, replace, field, select, table, section, say, act, when, download, button, confirmed, seg } from "./dom.js";
import { api, all, zonePath, associate, may, SSL_READ, SSL_WRITE } from "./api.js";

const VALIDITY = [["3650", "10 years"], ["1825", "5 years"], ["365", "1 year"], ["90", "90 days"], ["30", "30 days"]];

function caCard(ca) {
  return section("Managed CA",
    h("p", {}, "Client certificates issued here are signed by ", h("strong", {}, ca.name), "."),
    h("p", {}, "Serial ", h("span", { class: "mono" }, ca.serial_number), " · expires ", when(ca.expires_on)),
    download("managed-ca.pem", ca.certificate, "Download the CA certificate"));
}

function issued(certificate) {
  const parts = [h("h3", {}, `Certificate for ${certificate.common_name}`),
    h("p", {}, "Serial ", h("span", { class: "mono" }, certificate.serial_number), " · expires ", when(certificate.expires_on)),
    download("client-certificate.pem", certificate.certificate, "Download the certificate")];
  if (certificate.private_key) {
    parts.push(h("p", { class: "secret", role: "alert" },
      "The private key is shown once and is not stored: download it now."),
    h("pre", { class: "mono", id: "private-key" }, certificate.private_key),
    download("client-key.pem", certificate.private_key, "Download the private key"));
  }
  return h("div", { class: "panel", id: "issued" }, parts);
}

function createForm(refresh) {
  const generate = h("input", { type: "radio", name: "key", id: "key-generate", value: "generate", checked: true });
  const fromCsr = h("input", { type: "radio", name: "key", id: "key-csr", value: "csr" });
  const commonName = h("input", { id: "common-name", placeholder: "device-42" });
  const csr = h("textarea", { id: "csr", placeholder: "-----BEGIN CERTIFICATE REQUEST-----" });
  const validity = select(VALIDITY, "3650", { id: "validity" });
  const result = h("div", { "aria-live": "polite" });
  const form = h("form", { id: "create-certificate", "aria-label": "Create certificate" },
    h("h2", {}, "Create certificate"),
    h("fieldset", {}, h("legend", {}, "Private key"),
      h("div", {}, generate, h("label", { for: generate.id }, " Generate a private key and CSR with the gateway")),
      h("div", {}, fromCsr, h("label", { for: fromCsr.id }, " Use my private key and CSR"))),
    field("Common name (with a generated key)", commonName),
    field("Certificate signing request (PEM)", csr),
    field("Certificate validity", validity),
    h("button", { type: "submit" }, "Create"), result);
  form.addEventListener("submit", act(form, async () => {
    const body = { validity_days: Number(validity.value) };
    if (generate.checked) {
      body.generate_key = true;
      body.common_name = commonName.value.trim();
    } else {
      body.csr = csr.value;
    }
    const certificate = (await api("POST", zonePath("client_certificates"), body)).result;
    replace(result, issued(certificate));
    say(`Issued a certificate for ${certificate.common_name}.`);
    await refresh();
  }));
  return form;
}

function certActions(c, where, refresh) {
  if (!may(SSL_WRITE)) return "";
  if (c.status === "revoked") {
    return button("Reactivate", act(where, async () => {
      await api("PATCH", zonePath(`client_certificates/${seg(c.id)}`), { reactivate: true });
      say(`Reactivated ${c.common_name}.`);
      await refresh();
    }), { class: "secondary" });
  }
  return confirmed("Revoke", `Confirm: revoke ${c.common_name}`, where, async () => {
    await api("DELETE", zonePath(`client_certificates/${seg(c.id)}`));
    say(`Revoked ${c.common_name}.`);
    await refresh();
  }, { class: "danger", "data-serial": c.serial_number });
}

/** The Hosts section: which hostnames require a certificate from the managed CA. */
function hosts(caId, names, refresh) {
  const rows = names.map((name) => ({ name }));
  const removeFrom = (name) => act(list, async () => {
    await associate(caId, names.filter((n) => n !== name));
    say(`mTLS off for ${name}.`);
    await refresh();
  });
  const list = h("div");
  list.append(table("Hostnames that require a client certificate", [
    ["Hostname", (r) => h("span", { class: "mono" }, r.name)],
    ["", (r) => (may(SSL_WRITE) ? button("Turn mTLS off", removeFrom(r.name), { class: "secondary" }) : "")],
  ], rows, "No hostname requires a client certificate from this CA yet."));
  const out = section("Hosts", list);
  if (may(SSL_WRITE)) {
    const name = h("input", { id: "mtls-host", placeholder: "api.example.com" });
    const form = h("form", { id: "enable-mtls", "aria-label": "Enable mTLS for a hostname" },
      field("Hostname", name, "Connections to it must then present a certificate from the managed CA."),
      h("button", { type: "submit" }, "Enable mTLS"));
    form.addEventListener("submit", act(form, async () => {
      const wanted = name.value.trim();
      await associate(caId, [...new Set([...names, wanted])]);
      say(`mTLS on for ${wanted}.`);
      await refresh();
    }));
    out.append(form);
  }
  return out;
}

async function render(main) {
  const body = h("div");
  const refresh = async () => {
    const ca = (await api("GET", zonePath("managed_ca"))).result;
    const certificates = await all(zonePath("client_certificates"));
    replace(body,
      caCard(ca),
      section("Issued certificates", table("Client certificates, oldest first", [
        ["Common name", (c) => c.common_name],
        ["Serial", (c) => h("span", { class: "mono" }, c.serial_number)],
        ["Status", (c) => h("span", { class: c.status === "active" ? "on" : "off", "data-status": c.status }, c.status)],
        ["Expires", (c) => when(c.expires_on)],
        ["", (c) => certActions(c, body, refresh)],
      ], certificates)),
      hosts(ca.id, ca.hostnames, refresh));
  };
  main.append(body);
  if (may(SSL_WRITE)) main.append(createForm(refresh));
  await refresh();
}

export default { path: "client-certificates", title: "Client Certificates", needs: SSL_READ, render };
