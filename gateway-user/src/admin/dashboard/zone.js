// The zone's TLS settings: minimum version, cipher suites and session resumption.

import { h, field, select, section, say, act } from "./dom.js";
import { api, session, zonePath, may, ZONE_READ, ZONE_WRITE } from "./api.js";
import { VERSIONS, RESUMPTION } from "./hostnames.js";

async function render(main) {
  const zone = (await api("GET", `zones/${session.zone}`)).result;
  const minTls = (await api("GET", zonePath("settings/min_tls_version"))).result.value;
  const ciphers = (await api("GET", zonePath("settings/ciphers"))).result.value || [];
  const resumption = (await api("GET", zonePath("settings/session_resumption"))).result.value;
  const writable = may(ZONE_WRITE);
  const version = select(VERSIONS, minTls, { id: "zone-min-tls", disabled: !writable });
  const suites = h("input", { id: "zone-ciphers", value: ciphers.join(", "), disabled: !writable, placeholder: "BoringSSL's defaults" });
  const resume = select(RESUMPTION, String(resumption), { id: "zone-session-resumption", disabled: !writable });
  const form = h("form", { id: "zone-settings", "aria-label": "Zone TLS settings" },
    h("p", {}, "Zone ", h("span", { class: "mono" }, zone.name), ": hostnames without their own settings use these."),
    field("Minimum TLS version", version),
    field("Cipher suites", suites, "BoringSSL names, comma-separated; empty: BoringSSL's defaults."),
    field("Session resumption", resume, "TLS session tickets and IDs, each bound to the hostname's policy."),
    writable ? h("button", { type: "submit" }, "Save") : h("p", { class: "hint" }, "This token may only read the zone's settings."));
  form.addEventListener("submit", act(form, async () => {
    await api("PATCH", zonePath("settings/min_tls_version"), { value: version.value });
    await api("PATCH", zonePath("settings/ciphers"), { value: suites.value.split(/[\s,]+/).filter(Boolean) });
    await api("PATCH", zonePath("settings/session_resumption"), { value: resume.value === "true" });
    say("Saved the zone's TLS settings.");
  }));
  main.append(section("TLS", form));
}

export default { path: "zone", title: "Zone", needs: ZONE_READ, render };
