// The dashboard's shell: sign-in, the pages the token may see, and the
// hash router (`#/hostnames`, …). Each page module exports
// `{path, title, needs, render(main) -> stop?}`.

import { h, replace, field, say, problem } from "./dom.js";
import { session, signIn, signOut, may } from "./api.js";
import hostnames from "./hostnames.js";
import zone from "./zone.js";
import certs from "./certs.js";
import cas from "./cas.js";
import rules from "./rules.js";
import expiring from "./expiring.js";
import charts from "./charts.js";

const PAGES = [hostnames, zone, certs, cas, rules, expiring, charts];
const main = document.getElementById("main");
let stopPage = null;

function visible() {
  return PAGES.filter((page) => may(page.needs));
}

function showSignIn(error) {
  replace(document.getElementById("nav"));
  replace(document.getElementById("who"));
  const token = h("input", { type: "password", id: "token", autocomplete: "off", required: true });
  const form = h(
    "form",
    { id: "sign-in" },
    field("API token", token, "A token from the first run's banner or `gateway token create`. It stays in this tab only."),
    h("button", { type: "submit" }, "Sign in"),
    error ? problem(error) : null,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await signIn(token.value.trim());
      location.hash = location.hash || "#/hostnames";
      start();
    } catch (e) {
      showSignIn(e);
    }
  });
  replace(main, h("h1", {}, "Sign in"), form);
  token.focus();
}

function showNav() {
  const current = location.hash.slice(2);
  replace(
    document.getElementById("nav"),
    visible().map((page) =>
      h("a", { href: `#/${page.path}`, "aria-current": page.path === current ? "page" : null }, page.title),
    ),
  );
  replace(
    document.getElementById("who"),
    h("button", { type: "button", id: "sign-out", onclick: () => { leavePage(); signOut(); showSignIn(); } }, "Sign out"),
  );
}

let routing = 0;

/** Stops the page on show (its timers) and any render still under way. */
function leavePage() {
  routing += 1;
  if (stopPage) stopPage();
  stopPage = null;
}

async function route() {
  leavePage();
  const mine = routing;
  delete main.dataset.ready;
  const pages = visible();
  if (!pages.length) {
    replace(main, h("h1", {}, "Nothing to show"), h("p", {}, "This token holds no permission any page needs."));
    return;
  }
  const page = pages.find((p) => `#/${p.path}` === location.hash) || pages[0];
  if (`#/${page.path}` !== location.hash) {
    history.replaceState(null, "", `#/${page.path}`);
  }
  showNav();
  document.title = `${page.title} · Gateway dashboard`;
  // Each visit renders into its own view: one a later visit overtook stays detached.
  const view = h("div", {}, h("h1", {}, page.title));
  replace(main, view);
  let stop = null;
  try {
    stop = (await page.render(view)) || null;
    say("");
  } catch (error) {
    if (error.status === 401 || (error.status === 403 && /authentication/.test(error.message))) {
      signOut();
      showSignIn(error);
      return;
    }
    view.append(problem(error));
  }
  if (mine !== routing) {
    if (stop) stop();
    return;
  }
  stopPage = stop;
  main.dataset.ready = page.path;
}

async function start() {
  // Only `#/page` hashes are pages (`#main` is the skip link's target).
  window.onhashchange = () => location.hash.startsWith("#/") && route();
  await route();
}

if (session.token) {
  // A reload signs in again; only a refused token is forgotten, not a lost connection.
  signIn(session.token, { keepOnError: true }).then(start, showSignIn);
} else {
  showSignIn();
}
