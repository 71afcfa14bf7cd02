//! The dashboard's page frame and small view helpers (badges, times, numbers).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use outpost_protocol::wire::{Health, UpdatePhase};

use crate::fleet::machine::DeviceStatus;

/// The sections in the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// Devices.
    Fleet,
    /// Deployments.
    Deployments,
    /// Drift.
    Drift,
    /// Audit trail.
    Audit,
    /// Events.
    Events,
    /// Not signed in.
    None,
}

const NAV: [(Nav, &str, &str); 5] = [
    (Nav::Fleet, "/ui", "Fleet"),
    (Nav::Deployments, "/ui/deployments", "Deployments"),
    (Nav::Drift, "/ui/drift", "Drift"),
    (Nav::Audit, "/ui/audit", "Audit"),
    (Nav::Events, "/ui/events", "Events"),
];

/// Live-update topics (server-sent event names, see [`super::live`]) a page listens to.
pub type Topics = &'static [&'static str];

/// One page.
pub struct Page<'a> {
    /// Title (also the heading).
    pub title: String,
    /// Highlighted section.
    pub nav: Nav,
    /// The signed-in token's name (empty on the login page).
    pub actor: &'a str,
    /// Path and query of this page: live updates re-fetch it.
    pub uri: &'a str,
    /// Topics that re-render the page's content.
    pub live: Topics,
    /// The content.
    pub body: Markup,
}

/// Renders `page` as a complete HTML document with `status`.
pub fn render(status: StatusCode, page: Page<'_>) -> Response {
    // `hello` starts every (re)connected feed: re-fetching then catches whatever changed
    // between rendering the page and the feed starting, or while it was disconnected.
    let triggers = std::iter::once("hello")
        .chain(page.live.iter().copied())
        .map(|t| format!("sse:{t}"))
        .collect::<Vec<_>>()
        .join(", ");
    let signed_in = page.nav != Nav::None;
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // No inline styles (the CSP forbids them) and no eval.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
                title { (page.title) " · Outpost" }
                link rel="stylesheet" href="/ui/assets/uPlot.min.css";
                link rel="stylesheet" href="/ui/assets/dashboard.css";
                script src="/ui/assets/htmx.min.js" defer {}
                script src="/ui/assets/htmx-ext-sse.min.js" defer {}
                script src="/ui/assets/uPlot.iife.min.js" defer {}
                script src="/ui/assets/dashboard.js" defer {}
            }
            @if signed_in {
                body hx-ext="sse" sse-connect="/ui/live" {
                    (top_bar(page.nav, page.actor))
                    main {
                        @if page.live.is_empty() {
                            div #live { h1 { (page.title) } (page.body) }
                        } @else {
                            div #live hx-get=(page.uri) hx-trigger=(triggers)
                                hx-select="#live" hx-swap="outerHTML" {
                                h1 { (page.title) } (page.body)
                            }
                        }
                    }
                }
            } @else {
                body { main.narrow { h1 { (page.title) } (page.body) } }
            }
        }
    };
    let mut r = (status, axum::response::Html(doc.into_string())).into_response();
    let h = r.headers_mut();
    // Everything the pages load is served from /ui/assets; nothing inline, nothing remote.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn top_bar(nav: Nav, actor: &str) -> Markup {
    html! {
        header.top {
            a.brand href="/ui" { "Outpost" }
            nav {
                @for (n, href, label) in NAV {
                    a href=(href) class=[(n == nav).then_some("active")] { (label) }
                }
            }
            span #live-status .live title="live updates" { "live" }
            span.who { (actor) }
            form method="post" action="/ui/logout" { button type="submit" { "Sign out" } }
        }
    }
}

/// A coloured label: `kind` is one of ok, info, warn, bad, muted.
pub fn badge(kind: &str, text: &str) -> Markup {
    html! { span class={ "badge b-" (kind) } { (text) } }
}

/// A unix time, shown as UTC (the page's script adds how long ago).
pub fn time(unix_secs: u64) -> Markup {
    let t = outpost_protocol::time::rfc3339(unix_secs);
    html! { time datetime=(t) { (t.replace('T', " ").trim_end_matches('Z')) " UTC" } }
}

/// A unix time in milliseconds.
pub fn time_ms(unix_ms: u64) -> Markup {
    time(unix_ms / 1000)
}

/// The badge kind of an update phase.
pub fn phase_kind(p: UpdatePhase) -> &'static str {
    match p {
        UpdatePhase::Succeeded => "ok",
        UpdatePhase::Idle => "muted",
        UpdatePhase::Downloading | UpdatePhase::Installing | UpdatePhase::Probation => "info",
        UpdatePhase::Removing => "warn",
        UpdatePhase::Failed | UpdatePhase::RolledBack => "bad",
    }
}

/// The wire name of an enum (`rolled_back`, …).
pub fn wire_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A health badge.
pub fn health(h: Health) -> Markup {
    let kind = match h {
        Health::Ok => "ok",
        Health::Degraded => "warn",
        Health::NoModel => "muted",
    };
    badge(kind, &wire_name(&h))
}

/// The badge kind of a deployment state name.
pub fn state_kind(state: &str) -> &'static str {
    match state {
        "running" => "info",
        "succeeded" => "ok",
        "paused" | "rolling_back" => "warn",
        "rolled_back" => "bad",
        _ => "muted",
    }
}

/// A per-device rollout status: (badge kind, name, reason).
pub fn status(s: &DeviceStatus) -> (&'static str, &'static str, String) {
    match s {
        DeviceStatus::Pending => ("muted", "pending", String::new()),
        DeviceStatus::Targeted { since } => (
            "info",
            "targeted",
            format!(
                "directive sent {}",
                outpost_protocol::time::rfc3339(since / 1000)
            ),
        ),
        DeviceStatus::Succeeded => ("ok", "succeeded", String::new()),
        DeviceStatus::Failed { reason } => ("bad", "failed", reason.clone()),
        DeviceStatus::RolledBack { confirmed } => (
            "warn",
            "rolled back",
            if *confirmed {
                "back on its previous model".into()
            } else {
                "sent back; not confirmed yet".into()
            },
        ),
    }
}

/// A number with at most `digits` decimals.
pub fn num(v: f64, digits: usize) -> String {
    format!("{v:.digits$}")
}

/// Text shortened to `n` characters (digests, long reasons), the whole in a tooltip.
pub fn short(s: &str, n: usize) -> Markup {
    if s.chars().count() <= n {
        return html! { (s) };
    }
    let cut: String = s.chars().take(n).collect();
    html! { span title=(s) { (cut) "…" } }
}

/// Bytes for people: `2.4 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// An empty-state line.
pub fn empty(text: &str) -> Markup {
    html! { p.empty { (text) } }
}

/// JSON for a `data-` attribute (maud escapes it as an attribute value).
pub fn json_attr<T: serde::Serialize>(v: &T) -> String {
    // Serialising plain structs of strings and numbers cannot fail; an empty attribute
    // would only leave the chart out.
    serde_json::to_string(v).unwrap_or_default()
}

/// A non-breaking dash for missing values.
pub fn dash() -> Markup {
    PreEscaped("&ndash;".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(super::bytes(512), "512 bytes");
        assert_eq!(super::bytes(2_531_328), "2.4 MiB");
        assert_eq!(super::bytes(1 << 30), "1.0 GiB");
    }
}
