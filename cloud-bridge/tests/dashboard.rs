//! The dashboard over plain HTTP (the browser test is `outpost-sim`'s `tests/dashboard.rs`):
//! sign-in and the session cookie's flags, 401/404/400 pages, the embedded assets, the
//! page headers, data from outside escaped, nothing that changes state, and the live feed
//! naming what changed.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::harness::*;
use common::http::{Response, request};
use outpost_bridge::auth::{Role, add_token};
use outpost_bridge::events::NewEvent;
use outpost_protocol::wire::EventKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tag value that would run script if a page put it into HTML unescaped.
const MARKUP: &str = "<img src=x onerror=alert(1)>\"'&";

async fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> Response {
    let h: Vec<(&str, String)> = cookie
        .map(|t| vec![("Cookie", format!("outpost_session={t}"))])
        .unwrap_or_default();
    request(addr, "GET", path, &h, b"").await
}

async fn login(addr: SocketAddr, token: &str, extra: &[(&str, String)]) -> Response {
    let mut h = vec![(
        "Content-Type",
        "application/x-www-form-urlencoded".to_owned(),
    )];
    h.extend(extra.iter().cloned());
    request(
        addr,
        "POST",
        "/ui/login",
        &h,
        format!("token={token}").as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sets_a_strict_httponly_cookie_and_bad_requests_get_clear_pages() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(dir.path(), embedded(false)).await;
    let api = b.http_addr.unwrap();
    let token = add_token(&b.db.lock(), "alice", Role::Viewer).unwrap();
    outpost_bridge::devices::add(
        &b.db.lock(),
        &b.audit,
        "gw-7",
        &["site=north".into(), format!("note={MARKUP}")],
        "x86_64-unknown-linux-gnu",
        "mqtt://127.0.0.1:1883",
        &b.key.public_key(),
        &dir.path().join("gw-7"),
        "test",
    )
    .unwrap();

    // Not signed in: 401 with the sign-in form, and the page's security headers.
    let r = get(api, "/ui", None).await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("action=\"/ui/login\""), "{}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(get(api, "/ui", Some("opt_nonsense")).await.status, 401);
    assert_eq!(
        get(
            api,
            &format!("/ui?x={}", "a".repeat(300)),
            Some(&"t".repeat(300))
        )
        .await
        .status,
        401
    );

    // Signing in: a wrong token is refused; the right one sets the cookie.
    let r = login(api, "opt_wrong", &[]).await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("unknown or revoked token"));
    assert_eq!(
        request(api, "POST", "/ui/login", &[], b"nothing=here")
            .await
            .status,
        400
    );
    // A sign-in posted from another site (login CSRF) is refused; the dashboard's own
    // form, and clients that send no Sec-Fetch-Site, are not.
    for site in ["cross-site", "same-site"] {
        let r = login(api, &token, &[("Sec-Fetch-Site", site.into())]).await;
        assert_eq!(r.status, 403, "{site}: {}", r.text());
        assert!(r.header("set-cookie").is_none());
    }
    let r = login(api, &token, &[("Sec-Fetch-Site", "same-origin".into())]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let r = login(api, &token, &[]).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/ui"));
    let cookie = r.header("set-cookie").unwrap().to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(cookie.contains(flag), "{cookie} lacks {flag}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let r = login(api, &token, &[("X-Forwarded-Proto", "https".into())]).await;
    assert!(r.header("set-cookie").unwrap().contains("; Secure"));
    let r = request(
        api,
        "POST",
        "/ui/logout",
        &[("Sec-Fetch-Site", "cross-site".into())],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    let r = request(api, "POST", "/ui/logout", &[], b"").await;
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));

    // Signed in (cookie or bearer header): every page.
    for path in [
        "/ui",
        "/ui/deployments",
        "/ui/drift",
        "/ui/audit",
        "/ui/audit?verify=1",
        "/ui/events",
        "/ui/events?kind=device_online",
        "/ui/devices/gw-7",
    ] {
        let r = get(api, path, Some(&token)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let fleet = get(api, "/ui", Some(&token)).await.text();
    assert!(fleet.contains("data-device=\"gw-7\""), "{fleet}");
    assert!(fleet.contains("offline"));
    assert!(fleet.contains("sse-connect=\"/ui/live\""));

    // Text from outside (here a tag value) is escaped wherever it is shown: the fleet, the
    // device page, and the audit trail that recorded the device's creation.
    for path in ["/ui", "/ui/devices/gw-7"] {
        let page = get(api, path, Some(&token)).await.text();
        assert!(!page.contains("<img"), "{path}: unescaped markup:\n{page}");
        assert!(
            page.contains("note=&lt;img src=x onerror=alert(1)&gt;&quot;'&amp;"),
            "{path}: the tag is not shown escaped:\n{page}"
        );
    }

    // Read-only: the only forms are sign-in and sign-out, and no page takes a POST (or
    // any other method that could change something), whatever the token's role.
    let admin = add_token(&b.db.lock(), "root", Role::Admin).unwrap();
    let device_page = get(api, "/ui/devices/gw-7", Some(&admin)).await.text();
    assert_eq!(device_page.matches("<form").count(), 1, "{device_page}");
    assert!(device_page.contains("action=\"/ui/logout\""));
    for path in [
        "/ui",
        "/ui/devices/gw-7",
        "/ui/deployments",
        "/ui/drift",
        "/ui/audit",
        "/ui/events",
        "/ui/live",
    ] {
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let r = request(
                api,
                method,
                path,
                &[("Authorization", format!("Bearer {admin}"))],
                b"",
            )
            .await;
            assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
        }
    }
    let r = request(
        api,
        "GET",
        "/ui/audit",
        &[("Authorization", format!("Bearer {token}"))],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("device.add"), "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // Unknown things are 404 pages, malformed queries 400.
    for (path, status, says) in [
        ("/ui/devices/nope", 404, "device nope not found"),
        ("/ui/deployments/dep-404", 404, "not found"),
        ("/ui/drift?model=nope", 404, "model nope not found"),
        ("/ui/drift?device=nope", 404, "not found"),
        ("/ui/no-such-page", 404, "no such page"),
        ("/ui/events?limit=0", 400, "limit"),
        ("/ui/events?bogus=1", 400, "bogus"),
        ("/ui/audit?verify=2", 400, "verify"),
        ("/ui/deployments?state=a%20b", 400, "state"),
    ] {
        let r = get(api, path, Some(&token)).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(r.text().contains(says), "{path}: {}", r.text());
    }
    let long = format!("/ui/devices/{}", "x".repeat(80));
    assert_eq!(get(api, &long, Some(&token)).await.status, 400);

    // The embedded assets (no auth: nothing secret, the sign-in page needs them).
    for (name, kind) in [
        ("htmx.min.js", "text/javascript"),
        ("htmx-ext-sse.min.js", "text/javascript"),
        ("uPlot.iife.min.js", "text/javascript"),
        ("uPlot.min.css", "text/css"),
        ("dashboard.js", "text/javascript"),
        ("dashboard.css", "text/css"),
    ] {
        let r = get(api, &format!("/ui/assets/{name}"), None).await;
        assert_eq!(r.status, 200, "{name}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{name}"
        );
        assert!(r.body.len() > 1000, "{name}");
    }
    assert_eq!(get(api, "/ui/assets/../Cargo.toml", None).await.status, 404);
    b.shutdown().await;
}

/// Reads from `s` until `needle` arrives or `secs` pass; returns what was read.
async fn read_until(s: &mut tokio::net::TcpStream, needle: &str, secs: u64) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !String::from_utf8_lossy(&got).contains(needle) {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_names_what_changed_and_ends_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(dir.path(), embedded(false)).await;
    let api = b.http_addr.unwrap();
    let token = add_token(&b.db.lock(), "alice", Role::Viewer).unwrap();
    assert_eq!(get(api, "/ui/live", None).await.status, 401);

    let mut s = tokio::net::TcpStream::connect(api).await.unwrap();
    s.write_all(
        format!(
            "GET /ui/live HTTP/1.1\r\nHost: x\r\nCookie: outpost_session={token}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let head = read_until(&mut s, "event: hello", 5).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");

    // An event raised anywhere reaches the feed as `events`; a new device moves
    // `devices`. (The feed's poller may still be taking its first look, which absorbs a
    // change made meanwhile — pages re-fetch on `hello` for that — so make the change
    // until it is noticed.)
    let mut got = String::new();
    for i in 0..10 {
        b.events.emit(NewEvent::new(
            EventKind::DeviceOnline,
            format!("gw-{i} is online"),
        ));
        got = read_until(&mut s, "event: events", 1).await;
        if got.contains("event: events") {
            break;
        }
    }
    assert!(got.contains("event: events"), "{got}");
    for i in 0..10 {
        outpost_bridge::devices::ensure(
            &b.db.lock(),
            &b.audit,
            &format!("gw-{i}"),
            &Default::default(),
        )
        .unwrap();
        got = read_until(&mut s, "event: devices", 1).await;
        if got.contains("event: devices") {
            break;
        }
    }
    assert!(got.contains("event: devices"), "{got}");

    // Shutdown ends the stream: the response finishes (chunked encoding's last chunk),
    // rather than being cut when the HTTP drain gives up on it.
    b.shutdown().await;
    let rest = read_until(&mut s, "0\r\n\r\n", 10).await;
    assert!(
        rest.ends_with("0\r\n\r\n"),
        "the feed was cut, not ended: {rest:?}"
    );
}
