//! nginx answering `return 200` to every request: the machine's HTTP ceiling for one-commit
//! requests (it reads and drops the body and writes nothing), measured with the same client
//! and connections as shardlog. One worker process, access log off.
//!
//! What it is not: a peer that stores anything; its row says how fast HTTP alone goes here.

use super::{Process, free_port, spawn};
use std::process::Command;

/// Starts nginx (one worker) on a free loopback port with a configuration of its own.
pub async fn start(parent: &std::path::Path) -> anyhow::Result<Process> {
    let dir = tempfile::tempdir_in(parent)?;
    let port = free_port();
    let d = dir.path().display();
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         keepalive_requests 1000000;\n\
         server {{ listen 127.0.0.1:{port}; location / {{ return 200; }} }}\n}}\n"
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf)?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-c").arg(&path).arg("-p").arg(dir.path());
    spawn(cmd, port, dir, "nginx").await
}
