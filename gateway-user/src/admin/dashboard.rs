//! The dashboard: static assets, embedded in the binary, that the admin
//! listener serves at `/`. They hold no data: the page asks for an API token,
//! keeps it in the tab's `sessionStorage` (never in a cookie, so no other site
//! can make the browser send it), and calls the admin API with it. Every value
//! is put into the page as text, never as markup, and the Content-Security-Policy
//! allows only these files' own scripts and styles.

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::Full;

/// The policy every dashboard answer carries: only this origin's scripts,
/// styles and API; no inline script; no framing; DOM writes of markup refused
/// (Trusted Types with no policy).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; \
    trusted-types 'none'";

/// One embedded file: its path, media type and bytes.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    body: &'static [u8],
}

/// `asset!("app.js", JS)`: `dashboard/app.js`, served at `/dashboard/app.js`.
macro_rules! asset {
    ($file:literal, $media:expr) => {
        Asset {
            path: concat!("/dashboard/", $file),
            media_type: $media,
            body: include_bytes!(concat!("dashboard/", $file)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// The dashboard's files. `index.html` is the page (at `/` and `/dashboard/`);
/// the scripts are ES modules, one per page.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        media_type: "text/html; charset=utf-8",
        body: include_bytes!("dashboard/index.html"),
    },
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("hostnames.js", JS),
    asset!("zone.js", JS),
    asset!("certs.js", JS),
    asset!("cas.js", JS),
    asset!("rules.js", JS),
    asset!("expiring.js", JS),
    asset!("charts.js", JS),
];

/// The answer for a path outside `/client/v4/`: an embedded file (GET or
/// HEAD), 405 for other methods, 404 for unknown paths.
pub fn asset(method: &Method, path: &str) -> Response<Full<Bytes>> {
    let path = if path == "/dashboard" || path == "/dashboard/" {
        "/"
    } else {
        path
    };
    let found = ASSETS.iter().find(|a| a.path == path);
    let (status, media_type, body) = match found {
        _ if method != Method::GET && method != Method::HEAD => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            &b"the dashboard's files are read with GET\n"[..],
        ),
        Some(a) => (StatusCode::OK, a.media_type, a.body),
        None => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            &b"not found: the dashboard is at /, the API at /client/v4/\n"[..],
        ),
    };
    let body = if method == Method::HEAD {
        &[][..]
    } else {
        body
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, media_type)
        .header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::X_FRAME_OPTIONS, "DENY")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_script_is_embedded_and_served_with_the_policy() {
        let page = asset(&Method::GET, "/");
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(
            page.headers()[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!html.contains("<script>"), "no inline script");
        // Every module the page or another module imports is served.
        for a in ASSETS.iter().filter(|a| a.media_type == JS) {
            let text = std::str::from_utf8(a.body).unwrap();
            for import in text.lines().filter_map(|l| l.split_once("from \"./")) {
                let file = import.1.split('"').next().unwrap();
                let path = format!("/dashboard/{file}");
                assert_eq!(
                    asset(&Method::GET, &path).status(),
                    StatusCode::OK,
                    "{} imports {path}",
                    a.path
                );
            }
            assert!(
                !text.contains("innerHTML"),
                "{}: values go in as text",
                a.path
            );
        }
    }

    #[test]
    fn unknown_paths_and_writes_are_refused() {
        assert_eq!(
            asset(&Method::GET, "/etc/passwd").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            asset(&Method::POST, "/").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
