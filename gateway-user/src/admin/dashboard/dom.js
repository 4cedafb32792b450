// Building the page from values, always as text: `h` makes elements, and a
// string child becomes a text node, so nothing from the store is ever parsed
// as markup (the page's Trusted Types policy refuses markup writes anyway).

/** An element: `h("button", {class: "x", onclick: f}, "Save")`. */
export function h(tag, attrs = {}, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

const SVG = "http://www.w3.org/2000/svg";

/** An SVG element, as `h`. */
export function s(tag, attrs = {}, ...children) {
  return fill(document.createElementNS(SVG, tag), attrs, children);
}

function fill(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) {
      // Handlers are functions from this code, never attribute text.
      if (typeof value !== "function") throw new TypeError(`${name} must be a function`);
      el.addEventListener(name.slice(2), value);
    } else if (name === "href" && !/^(#\/|blob:)/.test(String(value))) {
      throw new TypeError(`href ${value} is neither a page of the dashboard nor a download`);
    } else if (name === "value" || name === "checked" || name === "disabled" || name === "selected") {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces `el`'s children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let lastId = 0;

/** A labelled control: `<label for=id>text</label>` and the control. */
export function field(label, control, hint) {
  if (!control.id) control.id = `f${++lastId}`;
  const hintEl = hint ? h("p", { class: "hint", id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintEl);
}

/** A `<select>` of `[value, text]` options with `current` selected. */
export function select(options, current, attrs = {}) {
  return h(
    "select",
    attrs,
    options.map(([value, text]) => h("option", { value, selected: value === current }, text)),
  );
}

/** A table: `columns` are `[title, row => cell]`; `rows` the records. */
export function table(caption, columns, rows, empty = "None yet.") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "table",
    {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", { scope: "col" }, title)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(row)))))),
  );
}

/** A section of a page, with its heading. */
export function section(title, ...children) {
  return h("section", { "aria-label": title }, h("h2", {}, title), ...children);
}

/** The page's status line (announced to screen readers). */
export function say(message, kind = "ok") {
  const status = document.getElementById("status");
  replace(status, message);
  status.className = kind;
}

/** An error box: the API's own words, and where in the request if it says. */
export function problem(error) {
  return h("p", { class: "error", role: "alert" }, String(error.message || error));
}

/** Runs `action` (async) for a button or form, showing its error beside
 * `where`; the button is disabled until it settles, so a double click acts once. */
export function act(where, action) {
  return async (event) => {
    event?.preventDefault?.();
    const control = event?.submitter || (event?.currentTarget instanceof HTMLButtonElement ? event.currentTarget : null);
    if (control?.disabled) return;
    if (control) control.disabled = true;
    where.querySelectorAll(":scope > .error").forEach((e) => e.remove());
    try {
      await action();
    } catch (error) {
      where.append(problem(error));
      say(String(error.message || error), "bad");
    } finally {
      if (control) control.disabled = false;
    }
  };
}

/** `2026-12-01 10:00 UTC` for an RFC 3339 time. */
export function when(rfc3339) {
  if (!rfc3339) return "—";
  return rfc3339.replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, " UTC");
}

/** A button that saves `text` as a file named `name` (the blob URL lives
 * only for the click, so a private key is not left reachable in the tab). */
export function download(name, text, label) {
  const save = () => {
    const url = URL.createObjectURL(new Blob([text], { type: "application/x-pem-file" }));
    const link = h("a", { href: url, download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  };
  return h("button", { type: "button", class: "download", "data-download": name, onclick: save }, label || `Download ${name}`);
}

/** A path segment: an id from the store, escaped for the URL. */
export const seg = (id) => encodeURIComponent(id);

/** A button that asks once more before `action`: the first click arms it. */
export function confirmed(text, armedText, where, action, attrs = {}) {
  const b = button(text, act(where, async () => {
    if (b.dataset.armed !== "1") {
      b.dataset.armed = "1";
      b.textContent = armedText;
      return;
    }
    await action();
  }), attrs);
  return b;
}

/** A button; `write` buttons are only made for tokens that may write. */
export function button(text, onclick, attrs = {}) {
  return h("button", { type: "button", onclick, ...attrs }, text);
}
