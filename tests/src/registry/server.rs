//! A small test-local HTTP/1.1 server that plays a registry badly on purpose: wrong digests,
//! huge manifests, dropped connections, error statuses. It honours `Range` and counts hits.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::build::Image;

#[derive(Clone, Debug)]
pub struct Route {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The first `drops` responses stop after `drop_after` body bytes and close.
    pub drops: usize,
    pub drop_after: usize,
    /// Send this many body bytes, then nothing more while the connection stays open: a registry
    /// that hangs mid-blob, so a pull can be caught (and killed) half-way.
    pub stall_after: Option<usize>,
}

impl Route {
    pub fn ok(content_type: &str, body: Vec<u8>) -> Self {
        Self {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
            drops: 0,
            drop_after: 0,
            stall_after: None,
        }
    }

    pub fn status(status: u16, headers: &[(&str, &str)], body: &str) -> Self {
        Self {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
            drops: 0,
            drop_after: 0,
            stall_after: None,
        }
    }

    /// `self`, hanging after `bytes` bytes of its body.
    pub fn stalling_after(mut self, bytes: usize) -> Self {
        self.stall_after = Some(bytes);
        self
    }
}

type Routes = Arc<Mutex<HashMap<String, Route>>>;

pub struct Server {
    pub port: u16,
    routes: Routes,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    ranges: Arc<Mutex<HashMap<String, Vec<usize>>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let routes: Routes = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let ranges: Arc<Mutex<HashMap<String, Vec<usize>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, h, g, s) = (routes.clone(), hits.clone(), ranges.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (r, h, g) = (r.clone(), h.clone(), g.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &r, &h, &g);
                });
            }
        });
        Self {
            port,
            routes,
            hits,
            ranges,
            stop,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn route(&self, path: &str, route: Route) {
        self.routes.lock().unwrap().insert(path.to_string(), route);
    }

    /// The `Range` start of every request for `path` (0 when there was none).
    pub fn ranges(&self, path: &str) -> Vec<usize> {
        self.ranges
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Serve `img` as `repo:tag` (and by manifest digest); umoci-style, without `mediaType`
    /// reliance: the Content-Type header says what it is.
    pub fn serve_image(&self, repo: &str, tag: &str, img: &Image) {
        let mt = "application/vnd.oci.image.manifest.v1+json";
        self.route(
            &format!("/v2/{repo}/manifests/{tag}"),
            Route::ok(mt, img.manifest.clone()),
        );
        self.route(
            &format!("/v2/{repo}/manifests/{}", img.digest()),
            Route::ok(mt, img.manifest.clone()),
        );
        self.route(
            &format!("/v2/{repo}/blobs/{}", super::build::sha256(&img.config)),
            Route::ok("application/octet-stream", img.config.clone()),
        );
        for l in &img.layers {
            self.route(
                &format!("/v2/{repo}/blobs/{}", l.digest()),
                Route::ok("application/octet-stream", l.blob.clone()),
            );
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    conn: TcpStream,
    routes: &Routes,
    hits: &Mutex<HashMap<String, usize>>,
    ranges: &Mutex<HashMap<String, Vec<usize>>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let path = path.split('?').next().unwrap_or("/").to_string();
        let mut range_from = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                range_from = v.trim().trim_end_matches('-').parse().unwrap_or(0);
            }
        }
        *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
        ranges
            .lock()
            .unwrap()
            .entry(path.clone())
            .or_default()
            .push(range_from);
        let route = {
            let mut map = routes.lock().unwrap();
            match map.get_mut(&path) {
                Some(r) => {
                    let snapshot = r.clone();
                    if r.drops > 0 {
                        r.drops -= 1;
                    }
                    Some(snapshot)
                }
                None => None,
            }
        };
        let mut out = conn.try_clone()?;
        let Some(route) = route else {
            let body = br#"{"errors":[{"code":"NOT_FOUND","message":"not here"}]}"#;
            write!(out, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len())?;
            out.write_all(body)?;
            continue;
        };
        let (status, body) =
            if route.status == 200 && range_from > 0 && range_from < route.body.len() {
                (206, &route.body[range_from..])
            } else {
                (route.status, &route.body[..])
            };
        write!(
            out,
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n",
            body.len()
        )?;
        if status == 206 {
            write!(
                out,
                "Content-Range: bytes {range_from}-{}/{}\r\n",
                route.body.len() - 1,
                route.body.len()
            )?;
        }
        for (k, v) in &route.headers {
            write!(out, "{k}: {v}\r\n")?;
        }
        write!(out, "\r\n")?;
        if route.drops > 0 {
            out.write_all(&body[..route.drop_after.min(body.len())])?;
            out.flush()?;
            return conn.shutdown(std::net::Shutdown::Both);
        }
        if let Some(n) = route.stall_after {
            out.write_all(&body[..n.min(body.len())])?;
            out.flush()?;
            std::thread::sleep(std::time::Duration::from_secs(300));
            return Ok(());
        }
        out.write_all(body)?;
    }
}
