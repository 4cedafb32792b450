//! Debian's nginx as the peer the benchmarks compare the gateway against:
//! TLS 1.2 and 1.3, a required and verified client certificate, one worker,
//! and the same origin behind it.

use std::{net::SocketAddr, path::Path, process::Command};

/// What one nginx server block terminates and where it proxies.
pub struct NginxSite<'a> {
    /// Scratch directory: pid file, error log, temp paths.
    pub dir: &'a Path,
    /// `listen` address, e.g. `127.0.0.1:8443`.
    pub listen: SocketAddr,
    /// `server_name`.
    pub name: &'a str,
    /// Server certificate chain (PEM).
    pub cert: &'a Path,
    /// Its key (PEM).
    pub key: &'a Path,
    /// CA that client certificates must chain to (PEM).
    pub client_ca: &'a Path,
    /// The origin, plain HTTP.
    pub origin: SocketAddr,
}

impl NginxSite<'_> {
    /// The whole `nginx.conf`: `ssl_protocols TLSv1.2 TLSv1.3`,
    /// `ssl_verify_client on`, no session tickets, keep-alive to the origin.
    pub fn config(&self) -> String {
        let d = self.dir.display();
        format!(
            "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/nginx-body;\n  proxy_temp_path {d}/nginx-proxy;\n\
             fastcgi_temp_path {d}/nginx-fcgi;\n  uwsgi_temp_path {d}/nginx-uwsgi;\n  scgi_temp_path {d}/nginx-scgi;\n\
             upstream origin {{ server {origin}; keepalive 32; }}\n\
             server {{\n    listen {listen} ssl;\n    server_name {name};\n\
             ssl_certificate {cert};\n    ssl_certificate_key {key};\n    ssl_protocols TLSv1.2 TLSv1.3;\n\
             ssl_client_certificate {ca};\n    ssl_verify_client on;\n    ssl_session_tickets off;\n\
             location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
             proxy_set_header X-Client-Verify $ssl_client_verify; }}\n  }}\n}}\n",
            origin = self.origin,
            listen = self.listen,
            name = self.name,
            cert = self.cert.display(),
            key = self.key.display(),
            ca = self.client_ca.display(),
        )
    }

    /// Writes `dir/nginx.conf` and appends to `cmd` (which ends with the `nginx`
    /// program, possibly behind a wrapper such as `taskset -c 1`) the arguments
    /// that run nginx in the foreground with it.
    pub fn write(&self, mut cmd: Command) -> std::io::Result<Command> {
        let conf = self.dir.join("nginx.conf");
        std::fs::write(&conf, self.config())?;
        cmd.arg("-p")
            .arg(self.dir)
            .arg("-c")
            .arg(conf)
            .args(["-g", "daemon off;"]);
        Ok(cmd)
    }
}
