//! Prometheus exposition shared by the agent's and the bridge's `GET /metrics`.
//!
//! Both serve a [`prometheus_client`] registry whose collectors read the daemon's own
//! counters at scrape time (nothing is counted twice). [`respond`] negotiates the format:
//! the Prometheus text format 0.0.4 by default — what `promtool check metrics`, `curl` and
//! every Prometheus server read — and OpenMetrics 1.0 when the scraper prefers it in its
//! `Accept` header (Prometheus itself does). The two differ only in framing (`# EOF`,
//! counter family names); the series are the same.
//!
//! The helpers ([`counter`], [`gauge`], [`histogram`]) write one family from rows of
//! labels and values, so collectors stay declarative. Units are part of the names
//! (`_seconds`, `_bytes`), counters get `_total` from the encoder.
//!
//! [`ConnCollector`] turns a listener's [`ConnStats`] into `http_*` series.

use std::fmt;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::ConnStats;

pub use prometheus_client;

/// Labels of one series: (name, value) pairs.
pub type Labels = Vec<(&'static str, String)>;

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The format a client's `Accept` header prefers: OpenMetrics only when it weighs
    /// `application/openmetrics-text` above `text/plain` (and `*/*`).
    pub fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Self::Text;
        };
        let (mut om, mut text) = (0.0f32, 0.0f32);
        for part in accept.split(',') {
            let mut params = part.split(';').map(str::trim);
            let media = params.next().unwrap_or("").to_ascii_lowercase();
            let q = params
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => om = om.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if om > 0.0 && om > text {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Encodes `registry` (running its collectors) in `format`.
pub fn encode(registry: &Registry, format: Format) -> Result<String, fmt::Error> {
    let mut out = String::new();
    match format {
        Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?,
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, registry)?,
    }
    Ok(out)
}

/// The `GET /metrics` answer for a request with `headers`: 200 with the registry in the
/// negotiated format, or 500 if a collector failed to encode.
pub fn respond(registry: &Registry, headers: &HeaderMap) -> Response {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    match encode(registry, format) {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"error\":\"metrics could not be encoded\"}",
        )
            .into_response(),
    }
}

/// Writes a counter family (`name` without `_total`; the encoder appends it).
pub fn counter<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(L, u64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// Writes a gauge family.
pub fn gauge<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(L, f64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// One histogram series: per-bucket counts (not cumulative; the encoder accumulates),
/// each with its upper bound (`f64::INFINITY` for the last), and the sum of observations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramRow {
    /// (upper bound, observations in this bucket only).
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observations, in the family's unit.
    pub sum: f64,
}

/// Writes a histogram family.
pub fn histogram<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(L, HistogramRow)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in rows {
        let count = h.buckets.iter().map(|b| b.1).sum();
        m.encode_family(labels)?
            .encode_histogram::<Labels>(h.sum, count, &h.buckets, None)?;
    }
    Ok(())
}

/// Connection counters of HTTP listeners as `http_*` series, labelled by `listener`.
#[derive(Debug, Clone, Default)]
pub struct ConnCollector {
    listeners: Vec<(&'static str, Arc<ConnStats>)>,
}

impl ConnCollector {
    /// Adds a listener under `name` (`tcp`, `unix`, …).
    pub fn listener(mut self, name: &'static str, stats: Arc<ConnStats>) -> Self {
        self.listeners.push((name, stats));
        self
    }
}

impl Collector for ConnCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let snaps: Vec<_> = self
            .listeners
            .iter()
            .map(|(n, s)| (*n, s.snapshot()))
            .collect();
        let rows = |f: fn(&crate::ConnCounts) -> u64| -> Vec<(Labels, u64)> {
            snaps
                .iter()
                .map(|(n, c)| (vec![("listener", (*n).to_owned())], f(c)))
                .collect()
        };
        counter(
            &mut enc,
            "http_connections_accepted",
            "HTTP connections taken in (under the cap or by evicting a waiting one).",
            &rows(|c| c.accepted),
        )?;
        let open: Vec<(Labels, f64)> = rows(|c| c.open)
            .into_iter()
            .map(|(l, v)| (l, v as f64))
            .collect();
        gauge(
            &mut enc,
            "http_connections_open",
            "HTTP connections open now.",
            &open,
        )?;
        counter(
            &mut enc,
            "http_connections_refused",
            "HTTP connections closed at once: over the cap with every open one busy.",
            &rows(|c| c.refused),
        )?;
        counter(
            &mut enc,
            "http_connections_evicted",
            "Waiting HTTP connections closed to make room for a new one.",
            &rows(|c| c.evicted),
        )?;
        let mut timeouts: Vec<(Labels, u64)> = Vec::new();
        for (n, c) in &snaps {
            for (kind, v) in [
                ("header", c.header_timeouts),
                ("idle", c.idle_timeouts),
                ("request", c.request_timeouts),
            ] {
                timeouts.push((
                    vec![("listener", (*n).to_owned()), ("kind", kind.to_owned())],
                    v,
                ));
            }
        }
        counter(
            &mut enc,
            "http_timeouts",
            "HTTP timeouts: header (request head too slow), idle (connection closed), request (answered 503).",
            &timeouts,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_prefers_text_unless_openmetrics_weighs_more() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Text
        );
        // What Prometheus sends.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0.2, text/plain")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text
        );
    }

    #[test]
    fn connection_counters_encode_in_both_formats() {
        let stats = Arc::new(ConnStats::default());
        stats
            .accepted
            .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        let mut reg = Registry::with_prefix("outpost_test");
        reg.register_collector(Box::new(ConnCollector::default().listener("tcp", stats)));
        let text = encode(&reg, Format::Text).unwrap();
        assert!(
            text.contains("# TYPE outpost_test_http_connections_accepted_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("outpost_test_http_connections_accepted_total{listener=\"tcp\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("outpost_test_http_timeouts_total{listener=\"tcp\",kind=\"idle\"} 0\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        let om = encode(&reg, Format::OpenMetrics).unwrap();
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# TYPE outpost_test_http_connections_accepted counter\n"));
    }

    #[test]
    fn histograms_accumulate_buckets_and_end_with_inf() {
        #[derive(Debug)]
        struct H;
        impl Collector for H {
            fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
                histogram(
                    &mut enc,
                    "latency_seconds",
                    "Latency.",
                    &[(
                        vec![("model", "m".to_owned())],
                        HistogramRow {
                            buckets: vec![(0.1, 2), (1.0, 1), (f64::INFINITY, 1)],
                            sum: 3.5,
                        },
                    )],
                )
            }
        }
        let mut reg = Registry::default();
        reg.register_collector(Box::new(H));
        let text = encode(&reg, Format::Text).unwrap();
        // Bounds are written in their shortest form (`1`, not `1.0`); Prometheus reads
        // `le` as a float either way.
        for line in [
            "latency_seconds_bucket{model=\"m\",le=\"0.1\"} 2",
            "latency_seconds_bucket{model=\"m\",le=\"1\"} 3",
            "latency_seconds_bucket{model=\"m\",le=\"+Inf\"} 4",
            "latency_seconds_sum{model=\"m\"} 3.5",
            "latency_seconds_count{model=\"m\"} 4",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(text.matches("le=\"+Inf\"").count(), 1);
    }
}
