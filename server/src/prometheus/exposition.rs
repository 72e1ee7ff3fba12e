//! Prometheus's text format, read and written, and the sum of several
//! processes' pages into one.
//!
//! Pasting two pages together is not a page: each family may have one
//! `# HELP` and one `# TYPE` line, and a series one sample. [`Exposition`]
//! keys every sample by its family, its name and its labels (sorted), so
//! that the same series from two workers becomes one sample with the sum of
//! their values.
//!
//! What a sum means depends on the type. Counters and histograms (and a
//! summary's `_sum` and `_count`) are totals, so they add up across
//! processes, and a process that exited keeps what it counted
//! ([`Exposition::cumulative`]). Gauges add up across the processes alive
//! (requests in flight, connections open). A summary's quantiles cannot be
//! added, so they are dropped.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt::Write as _;

/// A family's type, as its `# TYPE` line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl Kind {
    fn parse(text: &str) -> Self {
        match text {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" => Self::Histogram,
            "summary" => Self::Summary,
            _ => Self::Untyped,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
            Self::Untyped => "untyped",
        }
    }

    /// Whether its samples are totals since the process started.
    fn is_cumulative(self) -> bool {
        matches!(self, Self::Counter | Self::Histogram | Self::Summary)
    }
}

/// Where a sample goes within its series: a histogram's buckets in the
/// order of their bounds, then its sum and count.
#[derive(Clone, Debug)]
enum Part {
    /// A counter's or gauge's one sample (or a summary's quantile).
    Value,
    /// A histogram bucket: its bound as a number (for the order) and as
    /// the text it came as (so it is written back the same).
    Bucket(f64, String),
    Sum,
    Count,
}

impl PartialEq for Part {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Part {}

impl PartialOrd for Part {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Part {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let rank = |part: &Self| match part {
            Self::Value => 0,
            Self::Bucket(..) => 1,
            Self::Sum => 2,
            Self::Count => 3,
        };
        match (self, other) {
            (Self::Bucket(a, _), Self::Bucket(b, _)) => a.total_cmp(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

/// A sample's place in its family: its labels (sorted by name, without
/// `le`) and its part.
type SampleKey = (Vec<(String, String)>, Part);

#[derive(Clone, Debug)]
struct Family {
    help: Option<String>,
    kind: Kind,
    samples: BTreeMap<SampleKey, f64>,
}

/// A page of metrics: families by name, each with its samples.
#[derive(Clone, Debug, Default)]
pub(crate) struct Exposition {
    families: BTreeMap<String, Family>,
}

impl Exposition {
    /// Reads a page in the text format. Lines it cannot read are skipped:
    /// the pages come from this program's own workers.
    pub(crate) fn parse(text: &str) -> Self {
        let mut page = Self::default();
        // The family of the last `# TYPE` or `# HELP` line.
        let mut current: Option<String> = None;
        for line in text.lines() {
            let line = line.trim_end();
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.trim_start().splitn(3, ' ');
                let (Some(keyword), Some(name)) = (words.next(), words.next()) else {
                    continue;
                };
                let rest = words.next().unwrap_or("");
                match keyword {
                    "TYPE" => page.family(name).kind = Kind::parse(rest.trim()),
                    "HELP" => page.family(name).help = Some(rest.to_owned()),
                    _ => continue,
                }
                current = Some(name.to_owned());
                continue;
            }
            let Some((name, labels, value)) = parse_sample(line) else {
                continue;
            };
            let family = current
                .as_deref()
                .filter(|family| belongs_to(name, family))
                .unwrap_or(name)
                .to_owned();
            let kind = page.family(&family).kind;
            let Some(key) = sample_key(&family, name, labels, kind) else {
                continue;
            };
            page.family(&family).samples.insert(key, value);
        }
        page
    }

    fn family(&mut self, name: &str) -> &mut Family {
        self.families
            .entry(name.to_owned())
            .or_insert_with(|| Family {
                help: None,
                kind: Kind::Untyped,
                samples: BTreeMap::new(),
            })
    }

    // ANCHOR: add
    /// Adds `other`'s samples to this page's. A family whose type differs
    /// here (two versions of a program across a reload) keeps this page's
    /// type and samples.
    pub(crate) fn add(&mut self, other: &Self) {
        for (name, theirs) in &other.families {
            match self.families.entry(name.clone()) {
                Entry::Vacant(vacant) => {
                    vacant.insert(theirs.clone());
                }
                Entry::Occupied(mut occupied) => {
                    let ours = occupied.get_mut();
                    if ours.kind != theirs.kind {
                        continue;
                    }
                    if ours.help.is_none() {
                        ours.help.clone_from(&theirs.help);
                    }
                    for (key, value) in &theirs.samples {
                        *ours.samples.entry(key.clone()).or_insert(0.0) += value;
                    }
                }
            }
        }
    }

    /// The totals only (counters, histograms, summaries' sums and counts):
    /// what a process that exited still contributes.
    pub(crate) fn cumulative(&self) -> Self {
        let families = self
            .families
            .iter()
            .filter(|(_, family)| family.kind.is_cumulative())
            .map(|(name, family)| (name.clone(), family.clone()))
            .collect();
        Self { families }
    }
    // ANCHOR_END: add

    /// Sets one sample, creating its family with `kind` and `help`.
    pub(crate) fn set(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let family = self.family(name);
        family.kind = kind;
        family.help = Some(help.to_owned());
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        family.samples.insert((labels, Part::Value), value);
    }

    /// The value of a sample, if the page has it; for tests.
    #[cfg(test)]
    pub(crate) fn value(&self, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        self.families
            .get(family)?
            .samples
            .get(&(labels, Part::Value))
            .copied()
    }

    /// The page in the text format, families and series sorted by name.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for (name, family) in &self.families {
            if family.samples.is_empty() {
                continue;
            }
            if let Some(help) = &family.help {
                let _ = writeln!(out, "# HELP {name} {help}");
            }
            let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
            for ((labels, part), value) in &family.samples {
                let (suffix, le) = match part {
                    Part::Value => ("", None),
                    Part::Bucket(_, le) => ("_bucket", Some(le.as_str())),
                    Part::Sum => ("_sum", None),
                    Part::Count => ("_count", None),
                };
                out.push_str(name);
                out.push_str(suffix);
                let labels = labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .chain(le.map(|le| ("le", le)));
                write_labels(&mut out, labels);
                out.push(' ');
                write_value(&mut out, *value);
                out.push('\n');
            }
        }
        out
    }
}

/// Whether sample `name` is one of `family`'s (`x`, `x_bucket`, `x_sum`,
/// `x_count`).
fn belongs_to(name: &str, family: &str) -> bool {
    match name.strip_prefix(family) {
        Some(suffix) => matches!(suffix, "" | "_bucket" | "_sum" | "_count"),
        None => false,
    }
}

fn sample_key(
    family: &str,
    name: &str,
    mut labels: Vec<(String, String)>,
    kind: Kind,
) -> Option<SampleKey> {
    let suffix = &name[family.len()..];
    let part = match (kind, suffix) {
        (Kind::Histogram, "_bucket") => {
            let at = labels.iter().position(|(k, _)| k == "le")?;
            let (_, le) = labels.remove(at);
            let bound = parse_value(&le)?;
            Part::Bucket(bound, le)
        }
        (Kind::Histogram | Kind::Summary, "_sum") => Part::Sum,
        (Kind::Histogram | Kind::Summary, "_count") => Part::Count,
        // Quantiles cannot be added up.
        (Kind::Summary, "") => return None,
        (_, "") => Part::Value,
        _ => return None,
    };
    labels.sort();
    Some((labels, part))
}

/// A sample line's name, labels and value.
type Sample<'a> = (&'a str, Vec<(String, String)>, f64);

/// `name{a="1",b="2"} value [timestamp]`, with the label values unescaped.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once('=')?;
            let mut chars = after.strip_prefix('"')?.char_indices();
            let mut value = String::new();
            let end = loop {
                match chars.next()? {
                    (at, '"') => break at,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.trim().to_owned(), value));
            rest = &after[end + 2..];
        }
    }
    let value = rest.split_whitespace().next()?;
    Some((name, labels, parse_value(value)?))
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

fn write_labels<'a>(out: &mut String, labels: impl Iterator<Item = (&'a str, &'a str)>) {
    let mut first = true;
    for (key, value) in labels {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(key);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    if !first {
        out.push('}');
    }
}

/// Whole numbers without a fraction (counts stay exact to 2^53), the rest
/// in Rust's shortest round-trip form, with an exponent when large.
fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 {
        let _ = write!(out, "{}", value as i64);
    } else if value.abs() >= 9_007_199_254_740_992.0 {
        let _ = write!(out, "{value:e}");
    } else {
        let _ = write!(out, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKER_A: &str = r#"# HELP http_server_request_duration_seconds Duration.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{method="GET",le="0.1"} 3
http_server_request_duration_seconds_bucket{method="GET",le="1"} 4
http_server_request_duration_seconds_bucket{method="GET",le="+Inf"} 4
http_server_request_duration_seconds_sum{method="GET"} 0.5
http_server_request_duration_seconds_count{method="GET"} 4

# TYPE requests_total counter
requests_total{route="/a",status="200"} 4

# TYPE active gauge
active 2
"#;

    const WORKER_B: &str = r#"# TYPE active gauge
active 1
# TYPE requests_total counter
requests_total{status="200",route="/a"} 6
requests_total{route="/b \"quoted\"\n",status="500"} 1
# HELP http_server_request_duration_seconds Duration.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{le="0.1",method="GET"} 1
http_server_request_duration_seconds_bucket{le="1",method="GET"} 6
http_server_request_duration_seconds_bucket{le="+Inf",method="GET"} 6
http_server_request_duration_seconds_sum{method="GET"} 2.25
http_server_request_duration_seconds_count{method="GET"} 6
"#;

    #[test]
    fn same_series_from_two_processes_add_up() {
        let mut page = Exposition::parse(WORKER_A);
        page.add(&Exposition::parse(WORKER_B));
        assert_eq!(
            page.render(),
            r#"# TYPE active gauge
active 3
# HELP http_server_request_duration_seconds Duration.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{method="GET",le="0.1"} 4
http_server_request_duration_seconds_bucket{method="GET",le="1"} 10
http_server_request_duration_seconds_bucket{method="GET",le="+Inf"} 10
http_server_request_duration_seconds_sum{method="GET"} 2.75
http_server_request_duration_seconds_count{method="GET"} 10
# TYPE requests_total counter
requests_total{route="/a",status="200"} 10
requests_total{route="/b \"quoted\"\n",status="500"} 1
"#
        );
    }

    #[test]
    fn rendering_reads_back_the_same() {
        let mut page = Exposition::parse(WORKER_A);
        page.add(&Exposition::parse(WORKER_B));
        let text = page.render();
        assert_eq!(Exposition::parse(&text).render(), text);
    }

    #[test]
    fn an_exited_process_keeps_its_totals_not_its_gauges() {
        let retired = Exposition::parse(WORKER_A).cumulative();
        let text = retired.render();
        assert!(text.contains("requests_total{route=\"/a\",status=\"200\"} 4"));
        assert!(text.contains("_count{method=\"GET\"} 4"));
        assert!(!text.contains("active"));
    }

    #[test]
    fn summary_quantiles_are_dropped_and_types_never_mix() {
        let summary = "# TYPE latency summary\nlatency{quantile=\"0.5\"} 0.2\nlatency_sum 3\nlatency_count 9\n";
        let page = Exposition::parse(summary);
        assert_eq!(
            page.render(),
            "# TYPE latency summary\nlatency_sum 3\nlatency_count 9\n"
        );
        let mut page = Exposition::parse("# TYPE x counter\nx 5\n");
        page.add(&Exposition::parse("# TYPE x gauge\nx 7\n"));
        assert_eq!(page.render(), "# TYPE x counter\nx 5\n");
    }

    #[test]
    fn set_adds_the_arbiters_own_samples() {
        let mut page = Exposition::default();
        page.set(
            "turnstile_worker_restarts_total",
            Kind::Counter,
            "Workers replaced.",
            &[("reason", "timeout")],
            2.0,
        );
        assert_eq!(
            page.render(),
            "# HELP turnstile_worker_restarts_total Workers replaced.\n\
             # TYPE turnstile_worker_restarts_total counter\n\
             turnstile_worker_restarts_total{reason=\"timeout\"} 2\n"
        );
        assert_eq!(
            page.value("turnstile_worker_restarts_total", &[("reason", "timeout")]),
            Some(2.0)
        );
    }

    #[test]
    fn values_keep_their_precision() {
        let mut out = String::new();
        for value in [0.0, 380.0, 0.1 + 0.2, 1e300, f64::INFINITY] {
            write_value(&mut out, value);
            out.push(' ');
        }
        assert_eq!(out, "0 380 0.30000000000000004 1e300 +Inf ");
    }
}
