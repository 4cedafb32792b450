// Rules: the ordered list (move up and down, enable and disable, delete), the
// "Create mTLS rule" builder from a picker of mTLS-enabled hostnames, and an
// expression editor checked as the user types, errors at line and column.

import { h, replace, field, select, table, section, say, act, button, confirmed, seg, problem } from "./dom.js";
import { api, all, zonePath, may, SSL_READ, RULES_READ, RULES_WRITE } from "./api.js";

const ENTRYPOINT = "rulesets/phases/http_request_firewall_custom/entrypoint";

/** An expression's string literal (the rules language's escapes). */
const literal = (text) => `"${text.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;

/** The seeds' mTLS rule for `hosts`, with an optional path and revocation check. */
export function mtlsExpression(hosts, path, revoked) {
  const inHosts = `http.host in {${hosts.map(literal).join(" ")}}`;
  const onPath = path ? ` and starts_with(http.request.uri.path, ${literal(path)})` : "";
  const bad = revoked
    ? "(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked)"
    : "not cf.tls_client_auth.cert_verified";
  return `(${inHosts}${onPath} and ${bad})`;
}

/** The editor: checks through the API 250 ms after the last key. */
function editor() {
  const text = h("textarea", { id: "expression", spellcheck: "false", "aria-describedby": "expression-check" });
  const verdict = h("p", { id: "expression-check", "aria-live": "polite" });
  let timer;
  let asked = 0;
  const check = async () => {
    const mine = ++asked;
    if (!text.value.trim()) return replace(verdict);
    try {
      await api("POST", zonePath("filters/validate-expr"), { expression: text.value });
      if (mine !== asked) return;
      text.removeAttribute("aria-invalid");
      verdict.className = "valid";
      replace(verdict, "The expression is valid.");
    } catch (error) {
      if (mine !== asked) return;
      text.setAttribute("aria-invalid", "true");
      // Not `.error`: a refused Deploy clears the form's `.error` boxes, and
      // the live check must stay.
      verdict.className = "invalid";
      const where = error.source ? `Line ${error.source.line}, column ${error.source.column}: ` : "";
      replace(verdict, where, error.message.replace(/^expression: error at line \d+, column \d+: /, ""));
    }
  };
  const checking = () => { verdict.className = ""; replace(verdict, text.value.trim() ? "Checking…" : ""); };
  text.addEventListener("input", () => { checking(); clearTimeout(timer); timer = setTimeout(check, 250); });
  return { text, verdict, set: (value) => { text.value = value; checking(); check(); } };
}

function builder(mtlsHosts, expression) {
  const picker = h("select", { id: "mtls-hosts", multiple: true, size: Math.min(6, Math.max(2, mtlsHosts.length)) },
    mtlsHosts.map((name) => h("option", { value: name }, name)));
  const path = h("input", { id: "rule-path", placeholder: "/api (optional)" });
  const revoked = h("input", { type: "checkbox", id: "rule-revoked" });
  const form = h("form", { id: "mtls-builder", "aria-label": "Create mTLS rule" }, h("h2", {}, "Create mTLS rule"),
    mtlsHosts.length ? field("mTLS-enabled hostnames", picker) : h("p", { class: "empty" }, "No hostname has mTLS on yet (Client Certificates > Hosts)."),
    field("Only under this path", path),
    h("div", {}, revoked, h("label", { for: revoked.id }, " Also block revoked certificates")),
    h("button", { type: "submit", disabled: !mtlsHosts.length }, "Fill in the expression"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    form.querySelectorAll(":scope > .error").forEach((e) => e.remove());
    const hosts = [...picker.selectedOptions].map((o) => o.value);
    if (!hosts.length) {
      form.append(problem("Pick at least one hostname."));
      picker.focus();
      return;
    }
    expression.set(mtlsExpression(hosts, path.value.trim(), revoked.checked));
    document.getElementById("rule-description").value ||= `mTLS for ${hosts.join(", ")}`;
    expression.text.focus();
  });
  return form;
}

function ruleForm(expression, refresh) {
  const description = h("input", { id: "rule-description" });
  const action = select([["block", "Block"], ["log", "Log"], ["allow", "Allow (skip the rest)"]], "block", { id: "rule-action" });
  const form = h("form", { id: "new-rule", "aria-label": "New rule" }, h("h2", {}, "New rule"),
    field("Description", description), field("Expression", expression.text), expression.verdict,
    field("Then", action), h("button", { type: "submit" }, "Deploy"));
  form.addEventListener("submit", act(form, async () => {
    await api("POST", zonePath(`${ENTRYPOINT}/rules`),
      { description: description.value, expression: expression.text.value, action: action.value, enabled: true });
    say("Rule deployed.");
    form.reset();
    expression.set("");
    await refresh();
  }));
  return form;
}

/** A rule's buttons; `above` and `below` are its neighbours (moves are relative to them). */
function ruleActions(rule, above, below, where, refresh) {
  if (!may(RULES_WRITE)) return "";
  const patch = (body, message) => act(where, async () => {
    await api("PATCH", zonePath(`${ENTRYPOINT}/rules/${seg(rule.id)}`), body);
    say(message);
    await refresh();
  });
  const name = rule.description || rule.id;
  return [
    button("Up", patch({ position: { before: above?.id } }, "Moved up."), { class: "secondary", disabled: !above, "aria-label": `Move ${name} up` }),
    button("Down", patch({ position: { after: below?.id } }, "Moved down."), { class: "secondary", disabled: !below, "aria-label": `Move ${name} down` }),
    button(rule.enabled ? "Disable" : "Enable", patch({ enabled: !rule.enabled }, rule.enabled ? "Disabled." : "Enabled."), { class: "secondary" }),
    confirmed("Delete", `Confirm: delete ${name}`, where, async () => {
      await api("DELETE", zonePath(`${ENTRYPOINT}/rules/${seg(rule.id)}`));
      say("Rule deleted.");
      await refresh();
    }, { class: "danger" }),
  ];
}

async function render(main) {
  const list = h("div", { id: "rule-list" });
  const refresh = async () => {
    const rules = (await api("GET", zonePath(ENTRYPOINT))).result.rules || [];
    replace(list, table("Rules, evaluated top to bottom", [
      ["#", (r) => String(rules.indexOf(r) + 1)],
      ["Description", (r) => h("span", { class: "description" }, r.description || "—")],
      ["Expression", (r) => h("code", {}, r.expression)],
      ["Action", (r) => r.action],
      ["Enabled", (r) => h("span", { class: r.enabled ? "on" : "off" }, r.enabled ? "on" : "off")],
      ["", (r) => ruleActions(r, rules[rules.indexOf(r) - 1], rules[rules.indexOf(r) + 1], list, refresh)],
    ], rules, "No rule yet: every request that passes TLS is let through."));
  };
  main.append(section("Rules", list));
  if (may(RULES_WRITE)) {
    const expression = editor();
    const hosts = may(SSL_READ) ? (await all(zonePath("custom_hostnames"))).filter((x) => x.mtls.enabled).map((x) => x.hostname) : [];
    main.append(builder(hosts, expression), ruleForm(expression, refresh));
  }
  await refresh();
}

export default { path: "rules", title: "Rules", needs: RULES_READ, render };
