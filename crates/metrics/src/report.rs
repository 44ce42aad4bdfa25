//! Tabular output: every result flattens to [`MetricRow`]s (metric name, value, optional
//! interval) that serialise to JSON with serde or to CSV with [`to_csv`]; files are written
//! atomically (temporary file in the same folder, then rename).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bootstrap::{Interval, PrdcIntervals, RetrievalIntervals};
use crate::error::{MetricsError, Result};
use crate::prdc::Prdc;
use crate::retrieval::Retrieval;

/// One line of a results table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    /// Metric name (`"fd"`, `"precision"`, `"R@3"`, ...).
    pub metric: String,
    /// Point estimate.
    pub value: f64,
    /// Lower end of the confidence interval, if computed.
    pub lower: Option<f64>,
    /// Upper end of the confidence interval, if computed.
    pub upper: Option<f64>,
    /// Confidence of the interval, if computed.
    pub confidence: Option<f64>,
}

impl MetricRow {
    /// A row without an interval.
    pub fn value(metric: impl Into<String>, value: f64) -> Self {
        Self {
            metric: metric.into(),
            value,
            lower: None,
            upper: None,
            confidence: None,
        }
    }

    /// A row with its bootstrap interval.
    pub fn interval(metric: impl Into<String>, iv: &Interval) -> Self {
        Self {
            metric: metric.into(),
            value: iv.estimate,
            lower: Some(iv.lower),
            upper: Some(iv.upper),
            confidence: Some(iv.confidence),
        }
    }
}

impl Prdc {
    /// `precision`, `recall`, `density`, `coverage` rows.
    pub fn rows(&self) -> Vec<MetricRow> {
        vec![
            MetricRow::value("precision", self.precision),
            MetricRow::value("recall", self.recall),
            MetricRow::value("density", self.density),
            MetricRow::value("coverage", self.coverage),
        ]
    }
}

impl PrdcIntervals {
    /// `precision`, `recall`, `density`, `coverage` rows with intervals.
    pub fn rows(&self) -> Vec<MetricRow> {
        vec![
            MetricRow::interval("precision", &self.precision),
            MetricRow::interval("recall", &self.recall),
            MetricRow::interval("density", &self.density),
            MetricRow::interval("coverage", &self.coverage),
        ]
    }
}

impl Retrieval {
    /// `R@k` rows (named from `top_k`, the list the scores were computed with) and
    /// `mm_distance`.
    pub fn rows(&self, top_k: &[usize]) -> Vec<MetricRow> {
        let mut rows: Vec<MetricRow> = top_k
            .iter()
            .zip(&self.recall_at_k)
            .map(|(k, &v)| MetricRow::value(format!("R@{k}"), v))
            .collect();
        rows.push(MetricRow::value("mm_distance", self.mm_distance));
        rows
    }
}

impl RetrievalIntervals {
    /// `R@k` rows with intervals and `mm_distance`.
    pub fn rows(&self, top_k: &[usize]) -> Vec<MetricRow> {
        let mut rows: Vec<MetricRow> = top_k
            .iter()
            .zip(&self.recall_at_k)
            .map(|(k, iv)| MetricRow::interval(format!("R@{k}"), iv))
            .collect();
        rows.push(MetricRow::interval("mm_distance", &self.mm_distance));
        rows
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// CSV text with a header `metric,value,lower,upper,confidence`; missing intervals are empty
/// fields. Values use Rust's shortest round-trip formatting.
///
/// ```
/// use metrics::{MetricRow, to_csv};
/// let csv = to_csv(&[MetricRow::value("fd", 55.9)]);
/// assert_eq!(csv, "metric,value,lower,upper,confidence\nfd,55.9,,,\n");
/// ```
pub fn to_csv(rows: &[MetricRow]) -> String {
    let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    let mut out = String::from("metric,value,lower,upper,confidence\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{}\n",
            csv_field(&r.metric),
            r.value,
            opt(r.lower),
            opt(r.upper),
            opt(r.confidence)
        ));
    }
    out
}

/// Writes `bytes` to `path` atomically ([`tensor_io::atomic::write`]: a synced temporary file
/// next to it, renamed over it).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    tensor_io::atomic::write(path, bytes).map_err(|source| MetricsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `rows` as CSV ([`to_csv`]) to `path`, atomically.
pub fn write_csv(path: &Path, rows: &[MetricRow]) -> Result<()> {
    write_atomic(path, to_csv(rows).as_bytes())
}

/// Writes any serialisable result as pretty JSON to `path`, atomically.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_names_and_leaves_missing_intervals_empty() {
        let iv = Interval {
            estimate: 1.5,
            lower: 1.0,
            upper: 2.0,
            std_error: 0.25,
            confidence: 0.95,
            resamples: 10,
        };
        let csv = to_csv(&[
            MetricRow::interval("a,b", &iv),
            MetricRow::value("x\"y", 2.0),
        ]);
        assert_eq!(
            csv,
            "metric,value,lower,upper,confidence\n\"a,b\",1.5,1,2,0.95\n\"x\"\"y\",2,,,\n"
        );
    }

    #[test]
    fn json_and_csv_files_are_written_whole() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("metrics-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| MetricsError::Io {
            path: dir.clone(),
            source,
        })?;
        let p = Prdc {
            precision: 0.5,
            recall: 0.25,
            density: 1.0,
            coverage: 0.75,
        };
        let json = dir.join("prdc.json");
        write_json(&json, &p)?;
        let back: Prdc =
            serde_json::from_str(&std::fs::read_to_string(&json).map_err(|source| {
                MetricsError::Io {
                    path: json.clone(),
                    source,
                }
            })?)?;
        assert_eq!(back, p);
        let csv = dir.join("prdc.csv");
        write_csv(&csv, &p.rows())?;
        let text = std::fs::read_to_string(&csv).map_err(|source| MetricsError::Io {
            path: csv.clone(),
            source,
        })?;
        assert_eq!(text.lines().count(), 5);
        assert!(text.contains("coverage,0.75,,,"));
        // Only the two results remain: no temporary files.
        let names = std::fs::read_dir(&dir)
            .map_err(|source| MetricsError::Io {
                path: dir.clone(),
                source,
            })?
            .count();
        assert_eq!(names, 2);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
