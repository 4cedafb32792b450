// The admin API, called with the token the user signed in with. The token is
// kept in this tab's sessionStorage and sent as a Bearer header: no cookie
// carries it, so another site cannot make the browser use it.

const KEY = "gateway.token";

/** Who is signed in, and where: filled by `signIn`. */
export const session = { token: sessionStorage.getItem(KEY), permissions: [], zone: "", account: "" };

/** An answer with `success: false` (the API's message, and its `source`), or
 * no answer at all (status 0). */
export class ApiError extends Error {
  constructor(status, errors) {
    super(errors.map((e) => e.message).join("; ") || `HTTP ${status}`);
    this.status = status;
    this.source = errors[0]?.source;
  }
}

/** Calls `/client/v4/<path>`; answers `{result, result_info}` or throws ApiError. */
export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${session.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(`/client/v4/${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (error) {
    // The browser says only "Failed to fetch": the request got no answer.
    throw new ApiError(0, [{ message: `No answer from the gateway (${error.message})` }]);
  }
  let answer;
  try {
    answer = await response.json();
  } catch {
    throw new ApiError(response.status, [{ message: `HTTP ${response.status}: not a JSON answer` }]);
  }
  if (!answer.success) throw new ApiError(response.status, answer.errors || []);
  return answer;
}

/** Every page of a list (at most `limit` records). */
export async function all(path, limit = 5000) {
  const out = [];
  const join = path.includes("?") ? "&" : "?";
  for (let page = 1; out.length < limit; page++) {
    const { result, result_info: info } = await api("GET", `${path}${join}page=${page}&per_page=50`);
    out.push(...result);
    if (!info || page >= info.total_pages) break;
  }
  return out;
}

/** Checks `token`, learns its permissions and the zone, and keeps it for this tab. */
export async function signIn(token, { keepOnError = false } = {}) {
  session.token = token;
  try {
    const verified = (await api("GET", "user/tokens/verify")).result;
    const zone = (await api("GET", "zones")).result[0];
    session.permissions = verified.permissions || [];
    session.zone = zone.id;
    session.account = zone.account.id;
    sessionStorage.setItem(KEY, token);
  } catch (error) {
    const refused = error.status === 401 || error.status === 403;
    if (refused || !keepOnError) signOut();
    throw error;
  }
}

/** Forgets the token. */
export function signOut() {
  session.token = null;
  session.permissions = [];
  sessionStorage.removeItem(KEY);
}

/** Whether the token holds `group` (a Write group grants its Read). */
export function may(group) {
  const p = session.permissions;
  return p.includes(group) || (group.endsWith(" Read") && p.includes(group.replace(/ Read$/, " Write")));
}

/** `zones/<zone>/<rest>`. */
export const zonePath = (rest) => `zones/${session.zone}/${rest}`;

/** `accounts/<account>/<rest>`. */
export const accountPath = (rest) => `accounts/${session.account}/${rest}`;

/** Makes `hostnames` (the whole list) the ones that require certificates from CA `caId`. */
export const associate = (caId, hostnames) =>
  api("PUT", zonePath("certificate_authorities/hostname_associations"), { mtls_certificate_id: caId, hostnames });

/** The permission groups the pages need. */
export const SSL_READ = "SSL and Certificates Read";
export const SSL_WRITE = "SSL and Certificates Write";
export const ZONE_READ = "Zone Settings Read";
export const ZONE_WRITE = "Zone Settings Write";
export const RULES_READ = "Firewall Services Read";
export const RULES_WRITE = "Firewall Services Write";
export const ANALYTICS_READ = "Analytics Read";
