//! The Grafana dashboard the Helm chart ships (`charts/oxbow/dashboards/oxbow.json`), read
//! so that the broker's and the operator's tests can check that every series it queries is
//! one they export.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};

/// Suffixes Prometheus adds to a histogram's name; a query names the series, the registry
/// the histogram.
const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_count", "_sum"];

/// The dashboard's JSON text.
pub fn dashboard() -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/oxbow/dashboards/oxbow.json");
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// The metric names starting with `prefix` that the dashboard's queries use, histogram
/// suffixes removed.
pub fn queried_metrics(dashboard: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = dashboard;
    while let Some(at) = rest.find(prefix) {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let name = HISTOGRAM_SUFFIXES
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(name.to_owned());
        rest = &tail[end..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_from_queries_with_histogram_suffixes_removed() {
        let text = r#"{"expr": "sum by (api) (rate(oxbow_requests_total[5m]))"},
            {"expr": "histogram_quantile(0.99, sum by (le) (rate(oxbow_request_duration_seconds_bucket[5m])))"},
            {"expr": "oxbow_operator_resource_ready == 0"}"#;
        let names: Vec<String> = queried_metrics(text, "oxbow_").into_iter().collect();
        assert_eq!(
            names,
            [
                "oxbow_operator_resource_ready",
                "oxbow_request_duration_seconds",
                "oxbow_requests_total"
            ]
        );
        assert_eq!(
            queried_metrics(text, "oxbow_operator_").len(),
            1,
            "only names with the prefix"
        );
    }

    #[test]
    fn the_shipped_dashboard_queries_broker_and_operator_series() {
        let text = dashboard().expect("the chart's dashboard");
        let operator = queried_metrics(&text, "oxbow_operator_");
        let all = queried_metrics(&text, "oxbow_");
        assert!(operator.len() >= 10, "{operator:?}");
        assert!(all.len() - operator.len() >= 8, "{all:?}");
    }
}
