// Certificates that expire within 14 and within 30 days: CAs, client
// certificates and uploaded server certificates.

import { h, table, section, when } from "./dom.js";
import { all, zonePath, SSL_READ } from "./api.js";

const KINDS = {
  managed_ca: "managed CA",
  ca: "uploaded CA",
  server_ca: "server CA",
  client_certificate: "client certificate",
  server_certificate: "server certificate",
};

function list(title, items) {
  return section(title, table(title, [
    ["What", (x) => KINDS[x.kind] || x.kind],
    ["Name", (x) => h("span", { class: "mono" }, x.name)],
    ["Expires", (x) => when(x.expires_on)],
    ["Days left", (x) => h("span", { class: x.days_left < 14 ? "error" : "" }, String(x.days_left))],
  ], items, "Nothing expires in this window."));
}

async function render(main) {
  const soon = await all(zonePath("expiring_certificates?days=14"));
  const month = await all(zonePath("expiring_certificates?days=30"));
  main.append(list("Within 14 days", soon), list("Within 30 days", month));
}

export default { path: "expiring", title: "Expiring", needs: SSL_READ, render };
