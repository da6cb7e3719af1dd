//! The reference pairs: nginx and haproxy as the same two-hop reverse proxy as a Skiff
//! pair — a proxy in the client pod on 127.0.0.1:9090 forwarding to a proxy in the server
//! pod on 10.77.0.2:9091 forwarding to the app on 127.0.0.1 — each with one worker (one
//! thread), pinned like skiff-proxy, keep-alive to its upstream, no logging.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use skiff_tests::netns::{Netns, PodPair};

use crate::paths::{APP_PORT, BACK_PORT, FRONT_PORT, Mode, ProxyPair, SINK_PORT, wait_port};
use crate::proc::{Daemon, which};
use crate::tools::install_hint;

/// One hop: where it listens and where it forwards, and whether it listens for h2c.
struct Hop {
    listen: SocketAddr,
    upstream: SocketAddr,
    h2_listen: bool,
    h2_upstream: bool,
}

/// The two hops of a pair in `mode`: (client side, server side).
fn hops(mode: Mode, h2_upstream: bool) -> [Hop; 2] {
    let peer = PodPair::PEER_V4;
    let app = if mode == Mode::Tcp {
        SINK_PORT
    } else {
        APP_PORT
    };
    let h2 = mode == Mode::H2;
    [
        Hop {
            listen: SocketAddr::from(([127, 0, 0, 1], FRONT_PORT)),
            upstream: SocketAddr::from((peer, BACK_PORT)),
            h2_listen: h2,
            h2_upstream: h2 && h2_upstream,
        },
        Hop {
            listen: SocketAddr::from((peer, BACK_PORT)),
            upstream: SocketAddr::from(([127, 0, 0, 1], app)),
            h2_listen: h2 && h2_upstream,
            h2_upstream: h2 && h2_upstream,
        },
    ]
}

/// Starts both daemons of a pair and waits until each listens.
fn start_pair(
    pair: &PodPair,
    mode: Mode,
    h2_upstream: bool,
    spawn: impl Fn(&Netns, &Hop, &str) -> Result<Daemon>,
) -> Result<Vec<Daemon>> {
    let [front, back] = hops(mode, h2_upstream);
    let mut daemons = Vec::new();
    for (ns, hop, side) in [(&pair.peer, &back, "server"), (&pair.pod, &front, "client")] {
        let mut d = spawn(ns, hop, side)?;
        if !wait_port(ns, hop.listen, Duration::from_secs(10)) {
            d.alive();
            bail!(
                "{} did not listen on {}: {}",
                d.name(),
                hop.listen,
                d.log_tail()
            );
        }
        daemons.push(d);
    }
    Ok(daemons)
}

/// nginx's stream module (TCP proxying): built in, or the dynamic module file.
fn nginx_stream_module() -> Option<Option<&'static str>> {
    const MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
    let built_in = std::process::Command::new("nginx")
        .arg("-V")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .split_whitespace()
                .any(|flag| flag == "--with-stream")
        })
        .unwrap_or(false);
    if built_in {
        Some(None)
    } else if Path::new(MODULE).is_file() {
        Some(Some(MODULE))
    } else {
        None
    }
}

fn nginx_config(mode: Mode, hop: &Hop, dir: &Path, side: &str) -> Result<String> {
    let d = dir.display();
    let mut text = format!(
        "user root;\nworker_processes 1;\ndaemon off;\nmaster_process on;\npid {d}/nginx-{side}.pid;\nerror_log stderr error;\n"
    );
    if mode == Mode::Tcp {
        match nginx_stream_module() {
            Some(Some(module)) => text.push_str(&format!("load_module {module};\n")),
            Some(None) => {}
            None => bail!(
                "nginx has no stream module for TCP: apt-get install -y libnginx-mod-stream (scripts/bench installs it)"
            ),
        }
    }
    text.push_str("events { worker_connections 16384; }\n");
    if mode == Mode::Tcp {
        text.push_str(&format!(
            "stream {{\n  server {{\n    listen {};\n    proxy_pass {};\n  }}\n}}\n",
            hop.listen, hop.upstream
        ));
        return Ok(text);
    }
    let h2 = if hop.h2_listen { " http2" } else { "" };
    text.push_str(&format!(
        "http {{
  access_log off;
  client_body_temp_path {d}/{side}-body;
  proxy_temp_path {d}/{side}-proxy;
  fastcgi_temp_path {d}/{side}-fastcgi;
  uwsgi_temp_path {d}/{side}-uwsgi;
  scgi_temp_path {d}/{side}-scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  http2_max_requests 10000000;
  http2_max_concurrent_streams 1024;
  client_body_buffer_size 128k;
  client_max_body_size 16m;
  upstream app {{
    server {upstream};
    keepalive 256;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
  }}
  server {{
    listen {listen}{h2};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }}
  }}
}}
",
        upstream = hop.upstream,
        listen = hop.listen,
    ));
    Ok(text)
}

pub fn start_nginx(pair: &PodPair, mode: Mode, dir: &Path, cpu: usize) -> Result<ProxyPair> {
    if which("nginx").is_none() {
        bail!(install_hint("nginx"));
    }
    let daemons = start_pair(pair, mode, false, |ns, hop, side| {
        let config = dir.join(format!("nginx-{side}.conf"));
        std::fs::write(&config, nginx_config(mode, hop, dir, side)?)?;
        let mut cmd = ns.command("taskset");
        cmd.args(["-c", &cpu.to_string(), "nginx", "-e", "stderr", "-p"])
            .arg(dir)
            .arg("-c")
            .arg(&config);
        Daemon::spawn(&format!("nginx ({side} side)"), cmd)
    })?;
    let note = (mode == Mode::H2).then(|| {
        "h2c from the client only: nginx proxies to its upstream over HTTP/1.1 (it has no HTTP/2 upstream)".to_owned()
    });
    Ok(ProxyPair { daemons, note })
}

fn haproxy_config(mode: Mode, hop: &Hop) -> String {
    let h2_bind = if hop.h2_listen { " proto h2" } else { "" };
    let h2_server = if hop.h2_upstream { " proto h2" } else { "" };
    let (mode_line, reuse) = match mode {
        Mode::Tcp => ("tcp", ""),
        Mode::Http1 | Mode::H2 => ("http", "  http-reuse always\n"),
    };
    format!(
        "global
  nbthread 1
  maxconn 8000

defaults
  mode {mode_line}
  timeout connect 5s
  timeout client 300s
  timeout server 300s
{reuse}
frontend front
  bind {listen}{h2_bind}
  default_backend back

backend back
  server app {upstream}{h2_server}
",
        listen = hop.listen,
        upstream = hop.upstream,
    )
}

pub fn start_haproxy(pair: &PodPair, mode: Mode, dir: &Path, cpu: usize) -> Result<ProxyPair> {
    if which("haproxy").is_none() {
        bail!(install_hint("haproxy"));
    }
    let daemons = start_pair(pair, mode, true, |ns, hop, side| {
        let config = dir.join(format!("haproxy-{side}.cfg"));
        std::fs::write(&config, haproxy_config(mode, hop))?;
        let mut cmd = ns.command("taskset");
        cmd.args(["-c", &cpu.to_string(), "haproxy", "-db", "-f"])
            .arg(&config);
        Daemon::spawn(&format!("haproxy ({side} side)"), cmd)
    })?;
    Ok(ProxyPair {
        daemons,
        note: None,
    })
}
