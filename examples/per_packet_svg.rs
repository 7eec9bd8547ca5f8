//! Where the time goes per packet: draws criterion's results of the `director/stages` groups
//! (`benches/director.rs`) as one stacked bar per forwarding method and table size.
//!
//! ```text
//! cargo bench --bench director -- stages && cargo run --release --example per_packet_svg -- docs/per_packet.svg
//! cargo run --release --example per_packet_svg -- [--criterion DIR] FILE.svg
//! ```
//!
//! The benchmark takes the ACKs of established connections through cumulative stages: `copy`
//! (the frame into its receive buffer), `classify`, `classify + lookup`, `classify + lookup +
//! rewrite` and `process` (all of `Director::process_at`). This reads the median of each
//! (`DIR/<group>/<function>/new/estimates.json`, divided by the frames per iteration that
//! `benchmark.json` gives as throughput), subtracts each stage from the next and draws the
//! differences: classification, connection lookup, rewrite, and the rest of the director
//! (service and real-server checks, state machine, counters, timer), the copy left out: each
//! stage's marginal cost where it sits in the pipeline (an out-of-order core overlaps work
//! with cache misses, so a stage alone may cost more or less). `DIR`
//! is `$CARGO_TARGET_DIR/criterion`, or `target/criterion` of this crate. Every size measured
//! (`director_stages_{dr,nat}_N`) gets its bars. The footnote names the CPU (`/proc/cpuinfo`),
//! its vCPUs, the date of the measurement (UTC), the load average when the picture was drawn
//! (the benchmark itself keeps one core busy) and the command.
//!
//! Missing results get a message saying which file and what to run, and exit code 2; so does
//! bad usage. A file that cannot be read as criterion's, or written, exits with 1.

use std::fmt::Write as _;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The command that measures and draws `docs/per_packet.svg`.
const COMMAND: &str = "cargo bench --bench director -- stages && cargo run --release --example per_packet_svg -- docs/per_packet.svg";
/// What to run when results are missing.
const RUN_FIRST: &str = "run `cargo bench --bench director -- stages` first";

/// The benchmark's functions, each stage adding to the previous.
const FUNCTIONS: [&str; 5] = [
    "copy",
    "classify",
    "classify + lookup",
    "classify + lookup + rewrite",
    "process",
];
/// Group name part and label of each forwarding method, in drawing order.
const METHODS: [(&str, &str); 2] = [("dr", "DR"), ("nat", "NAT")];
/// What each segment is, and its colour (Okabe and Ito's palette, kind to colour blindness).
const SEGMENTS: [(&str, &str); 4] = [
    ("classification", "#56B4E9"),
    ("connection lookup", "#E69F00"),
    ("rewrite", "#009E73"),
    (
        "rest of the director: service, state machine, counters, timer",
        "#CC79A7",
    ),
];

#[derive(Debug)]
enum Fail {
    /// Results are missing: exit 2.
    Missing(String),
    /// Bad usage: exit 2.
    Usage(String),
    /// Anything else: exit 1.
    Other(String),
}

impl Fail {
    fn code(&self) -> u8 {
        match self {
            Fail::Missing(_) | Fail::Usage(_) => 2,
            Fail::Other(_) => 1,
        }
    }
    fn message(&self) -> &str {
        match self {
            Fail::Missing(m) | Fail::Usage(m) | Fail::Other(m) => m,
        }
    }
}

/// One bar: a method at a table size, cumulative nanoseconds per packet after each function.
#[derive(Clone, Debug, PartialEq)]
struct Bar {
    method: &'static str,
    conns: u64,
    /// Medians of [`FUNCTIONS`], nanoseconds per packet.
    ns: [f64; 5],
}

impl Bar {
    /// The four segments (stage minus the previous stage; the copy is the first baseline).
    fn segments(&self) -> [f64; 4] {
        std::array::from_fn(|i| self.ns[i + 1] - self.ns[i])
    }
    /// `process` minus `copy`.
    fn total(&self) -> f64 {
        self.ns[4] - self.ns[0]
    }
}

/// The median of criterion's `estimates.json`, in its unit (nanoseconds per iteration).
fn median_ns(json: &str) -> Result<f64, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    v["median"]["point_estimate"]
        .as_f64()
        .filter(|x| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| "no median.point_estimate".to_string())
}

/// The elements per iteration of criterion's `benchmark.json` (1 without a throughput).
fn elements(json: &str) -> Result<u64, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    match &v["throughput"] {
        Value::Null => Ok(1),
        t => t["Elements"]
            .as_u64()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("throughput {t} is not in elements")),
    }
}

fn read(path: &Path) -> Result<String, Fail> {
    std::fs::read_to_string(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Fail::Missing(format!("{} is missing: {RUN_FIRST}", path.display())),
        _ => Fail::Other(format!("{}: {e}", path.display())),
    })
}

/// The table sizes measured for `method`: the `N` of each `director_stages_{method}_N`.
fn sizes(dir: &Path, method: &str) -> Result<Vec<u64>, Fail> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Fail::Other(format!("{}: {e}", dir.display()))),
    };
    let prefix = format!("director_stages_{method}_");
    let mut out: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix(&prefix)?.parse().ok())
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Every bar with results in `dir` (criterion's output directory), and the time of the
/// newest result.
fn load(dir: &Path) -> Result<(Vec<Bar>, SystemTime), Fail> {
    let mut bars = Vec::new();
    let mut newest = UNIX_EPOCH;
    for (method, label) in METHODS {
        for conns in sizes(dir, method)? {
            let group = dir.join(format!("director_stages_{method}_{conns}"));
            let mut ns = [0.0; 5];
            for (x, f) in ns.iter_mut().zip(FUNCTIONS) {
                let new = group.join(f).join("new");
                let est = new.join("estimates.json");
                let bench = new.join("benchmark.json");
                let bad = |p: &Path, e: String| Fail::Other(format!("{}: {e}", p.display()));
                let median = median_ns(&read(&est)?).map_err(|e| bad(&est, e))?;
                let per = elements(&read(&bench)?).map_err(|e| bad(&bench, e))?;
                *x = median / per as f64;
                if let Ok(t) = std::fs::metadata(&est).and_then(|m| m.modified()) {
                    newest = newest.max(t);
                }
            }
            bars.push(Bar {
                method: label,
                conns,
                ns,
            });
        }
    }
    if bars.is_empty() {
        return Err(Fail::Missing(format!(
            "no results of director/stages in {}: {RUN_FIRST}",
            dir.display()
        )));
    }
    Ok((bars, newest))
}

/// `YYYY-MM-DD` (UTC) of a time.
fn date(t: SystemTime) -> String {
    let days = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The machine: CPU model and vCPUs (from `/proc/cpuinfo`), load average now.
fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = info
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    let cpus = if cpus > 0 {
        cpus
    } else {
        std::thread::available_parallelism().map_or(0, |n| n.get())
    };
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .map_or(String::new(), |l| format!(", load average {l} when drawn"));
    format!("{model}, {cpus} vCPUs{load}")
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `1 000 000` style.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}

/// Nanoseconds as written on the picture.
fn ns(x: f64) -> String {
    if x.abs() < 9.95 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// A tick step giving about six ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let raw = max.max(1.0) / 6.0;
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * p)
}

/// The picture. `footnote` lines go under it.
fn render(bars: &[Bar], footnote: &[String]) -> String {
    const W: f64 = 1000.0;
    const LEFT: f64 = 170.0;
    const RIGHT: f64 = 90.0;
    const BAR_H: f64 = 34.0;
    const PITCH: f64 = 62.0;
    const GROUP_GAP: f64 = 18.0;
    let max = bars
        .iter()
        .map(|b| b.segments().iter().map(|s| s.max(0.0)).sum::<f64>())
        .fold(0.0, f64::max);
    let step = tick_step(max);
    let axis_max = (max / step).ceil() * step;
    let plot_w = W - LEFT - RIGHT;
    let x = |v: f64| LEFT + v / axis_max * plot_w;

    let legend_y = 86.0;
    let top = 130.0;
    let groups = bars
        .windows(2)
        .filter(|w| w[0].method != w[1].method)
        .count();
    let bottom = top + PITCH * bars.len() as f64 + GROUP_GAP * groups as f64;
    let h = bottom + 52.0 + 18.0 * footnote.len() as f64 + 10.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif">"#
    );
    let _ = writeln!(s, r##"<rect width="{W}" height="{h}" fill="#ffffff"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{}" y="32" text-anchor="middle" font-size="22" font-weight="bold" fill="#000">Where the time goes: one packet of an established TCP connection</text>"##,
        W / 2.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="56" text-anchor="middle" font-size="14" fill="#333">Director::process_at in cumulative stages, one 64-byte frame at a time, connections in random order</text>"##,
        W / 2.0
    );

    // Legend: four swatches on one row, spaced by their text.
    let mut lx = 40.0;
    for (name, colour) in SEGMENTS {
        let _ = writeln!(
            s,
            r##"<rect x="{lx}" y="{}" width="16" height="16" fill="{colour}"/><text x="{}" y="{}" font-size="13" fill="#000">{}</text>"##,
            legend_y - 12.0,
            lx + 22.0,
            legend_y + 1.0,
            esc(name)
        );
        lx += 22.0 + 7.0 * name.len() as f64 + 26.0;
    }

    // Grid and axis.
    let mut t = 0.0;
    while t <= axis_max + step / 2.0 {
        let gx = x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{}" x2="{gx:.1}" y2="{}" stroke="{}" stroke-width="1"/><text x="{gx:.1}" y="{}" text-anchor="middle" font-size="13" fill="#000">{}</text>"##,
            top - 16.0,
            bottom,
            if t == 0.0 { "#000" } else { "#dddddd" },
            bottom + 18.0,
            t
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#000" stroke-width="1"/>"##,
        x(axis_max)
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="14" fill="#000">ns per packet (median)</text>"##,
        LEFT + plot_w / 2.0,
        bottom + 40.0
    );

    // Bars.
    let mut y = top;
    for (i, b) in bars.iter().enumerate() {
        if i > 0 && bars[i - 1].method != b.method {
            y += GROUP_GAP;
        }
        let mid = y + BAR_H / 2.0;
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end" font-size="15" font-weight="bold" fill="#000">{}</text><text x="{}" y="{}" text-anchor="end" font-size="13" fill="#333">{} connections</text>"##,
            LEFT - 12.0,
            mid - 3.0,
            b.method,
            LEFT - 12.0,
            mid + 13.0,
            thousands(b.conns)
        );
        let mut at = 0.0;
        for (seg, (v, (_, colour))) in b.segments().into_iter().zip(SEGMENTS).enumerate() {
            let w = v.max(0.0);
            let (x0, x1) = (x(at), x(at + w));
            let _ = writeln!(
                s,
                r##"<rect x="{x0:.1}" y="{y}" width="{:.1}" height="{BAR_H}" fill="{colour}" stroke="#ffffff" stroke-width="1"/>"##,
                x1 - x0
            );
            let label = ns(v);
            let fits = x1 - x0 >= 8.0 * label.len() as f64 + 2.0;
            if fits {
                let _ = writeln!(
                    s,
                    r##"<text x="{:.1}" y="{}" text-anchor="middle" font-size="14" fill="#000">{label}</text>"##,
                    (x0 + x1) / 2.0,
                    mid + 5.0
                );
            } else {
                // Too narrow: above the bar, alternately higher so neighbours do not collide.
                let ly = y - 4.0 - if seg % 2 == 1 { 0.0 } else { 12.0 };
                let _ = writeln!(
                    s,
                    r##"<text x="{:.1}" y="{ly}" text-anchor="middle" font-size="11" fill="#000">{label}</text>"##,
                    (x0 + x1) / 2.0
                );
            }
            at += w;
        }
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{}" font-size="14" font-weight="bold" fill="#000">{} ns</text>"##,
            x(at) + 8.0,
            mid + 5.0,
            ns(b.total())
        );
        y += PITCH;
    }

    let mut fy = bottom + 70.0;
    for line in footnote {
        let _ = writeln!(
            s,
            r##"<text x="20" y="{fy}" font-size="12" fill="#444">{}</text>"##,
            esc(line)
        );
        fy += 18.0;
    }
    s.push_str("</svg>\n");
    s
}

/// The footnote: what was subtracted, the machine, the date, the command.
fn footnote(bars: &[Bar], measured: SystemTime) -> Vec<String> {
    let copies: Vec<String> = bars
        .iter()
        .map(|b| format!("{} {}: {}", b.method, thousands(b.conns), ns(b.ns[0])))
        .collect();
    let mut out = vec![
        "Each segment: the median of a stage minus that of the stage before (copy → classify → + lookup → + rewrite → process)."
            .to_string(),
        format!(
            "Left out: the copy of each frame into its receive buffer, measured alone (ns per packet: {}).",
            copies.join(", ")
        ),
        format!("{}, measured {}.", machine(), date(measured)),
        COMMAND.to_string(),
    ];
    if bars.iter().any(|b| b.segments().iter().any(|&v| v < 0.0)) {
        out.insert(
            2,
            "A negative difference (noise) is drawn as nothing; the totals are process minus copy."
                .into(),
        );
    }
    out
}

fn default_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t).join("criterion"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/criterion"),
    }
}

fn execute(args: &[String]) -> Result<String, Fail> {
    let usage = "usage: per_packet_svg [--criterion DIR] FILE.svg";
    let mut dir = None;
    let mut out = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--criterion" => {
                dir = Some(PathBuf::from(it.next().ok_or_else(|| {
                    Fail::Usage(format!("--criterion needs a DIR; {usage}"))
                })?))
            }
            "-h" | "--help" => return Err(Fail::Usage(usage.into())),
            f if out.is_none() && !f.starts_with('-') => out = Some(PathBuf::from(f)),
            other => return Err(Fail::Usage(format!("unexpected {other}; {usage}"))),
        }
    }
    let out = out.ok_or_else(|| Fail::Usage(usage.into()))?;
    let dir = dir.unwrap_or_else(default_dir);
    let (bars, measured) = load(&dir)?;
    let svg = render(&bars, &footnote(&bars, measured));
    std::fs::write(&out, &svg).map_err(|e| Fail::Other(format!("{}: {e}", out.display())))?;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "{:<5} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "", "conns", "copy", "classify", "lookup", "rewrite", "rest", "total"
    );
    for b in &bars {
        let [c, l, r, rest] = b.segments();
        let _ = writeln!(
            report,
            "{:<5} {:>9} {:>7.1} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            b.method,
            b.conns,
            b.ns[0],
            c,
            l,
            r,
            rest,
            b.total()
        );
    }
    let _ = writeln!(report, "wrote {} ({} bytes)", out.display(), svg.len());
    Ok(report)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match execute(&args) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("per_packet_svg: {}", f.message());
            ExitCode::from(f.code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Criterion 0.8's `estimates.json`, as written for `director/established/dr/4096/lvs`.
    const ESTIMATES: &str = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":2933.069461231338,"upper_bound":3115.2582193334038},"point_estimate":3021.0633086122066,"standard_error":46.65086649228969},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":2860.8638170347003,"upper_bound":3160.482710304942},"point_estimate":2893.0678740753037,"standard_error":92.79530838527603},"median_abs_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":42.87248842498111,"upper_bound":343.6842612603719},"point_estimate":105.50039271053434,"standard_error":90.05841688668518},"slope":null,"std_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":154.58041470894972,"upper_bound":243.47598220703824},"point_estimate":213.4033745747303,"standard_error":22.627403258897324}}"#;
    const BENCHMARK: &str = r#"{"group_id":"director/stages/dr/4096","function_id":"copy","value_str":null,"throughput":{"Elements":32},"full_id":"director/stages/dr/4096/copy","directory_name":"director_stages_dr_4096/copy","title":"director/stages/dr/4096/copy"}"#;

    /// A fresh directory under the system's temporary one.
    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("per_packet_svg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Writes criterion's two files for one function, the median `median` per iteration.
    fn result(dir: &Path, group: &str, function: &str, median: f64) {
        let new = dir.join(group).join(function).join("new");
        std::fs::create_dir_all(&new).unwrap();
        let est = ESTIMATES.replace("2893.0678740753037", &median.to_string());
        std::fs::write(new.join("estimates.json"), est).unwrap();
        std::fs::write(new.join("benchmark.json"), BENCHMARK).unwrap();
    }

    #[test]
    fn reads_the_median_not_the_mean() {
        assert_eq!(median_ns(ESTIMATES).unwrap(), 2893.0678740753037);
    }

    #[test]
    fn refuses_estimates_without_a_median() {
        assert!(median_ns(r#"{"mean":{"point_estimate":1.0}}"#).is_err());
        assert!(median_ns(r#"{"median":{"point_estimate":"x"}}"#).is_err());
        assert!(median_ns("not json").is_err());
    }

    #[test]
    fn reads_the_elements_per_iteration() {
        assert_eq!(elements(BENCHMARK).unwrap(), 32);
        assert_eq!(elements(r#"{"throughput":null}"#).unwrap(), 1);
        assert!(elements(r#"{"throughput":{"Bytes":64}}"#).is_err());
    }

    #[test]
    fn missing_results_say_what_to_run_and_exit_2() {
        let d = scratch("missing");
        let e = load(&d.join("nowhere")).unwrap_err();
        assert!(matches!(e, Fail::Missing(_)), "{e:?}");
        assert_eq!(e.code(), 2);
        assert!(e.message().contains(RUN_FIRST), "{}", e.message());
        // An empty criterion directory: the same.
        let e = load(&d).unwrap_err();
        assert!(e.message().contains(RUN_FIRST), "{}", e.message());
        // One function missing: named.
        for (i, f) in FUNCTIONS.iter().enumerate().take(4) {
            result(&d, "director_stages_dr_4096", f, 100.0 * i as f64);
        }
        let e = load(&d).unwrap_err();
        assert_eq!(e.code(), 2);
        assert!(
            e.message().contains("process") && e.message().contains("estimates.json"),
            "{}",
            e.message()
        );
        assert!(e.message().contains(RUN_FIRST));
        // And through the command line, without writing the picture.
        let out = d.join("out.svg");
        let args = [
            "--criterion".to_string(),
            d.join("nowhere").display().to_string(),
            out.display().to_string(),
        ];
        assert_eq!(execute(&args).unwrap_err().code(), 2);
        assert!(!out.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_json_is_not_missing() {
        let d = scratch("bad");
        for f in FUNCTIONS {
            result(&d, "director_stages_nat_4096", f, 320.0);
        }
        let est = d.join("director_stages_nat_4096/classify/new/estimates.json");
        std::fs::write(&est, "{").unwrap();
        let e = load(&d).unwrap_err();
        assert_eq!(e.code(), 1);
        assert!(e.message().contains("estimates.json"), "{}", e.message());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn loads_every_size_per_packet_and_draws_them() {
        let d = scratch("load");
        // Per burst of 32: copy 3.2, classify +16, lookup +32, rewrite +8, rest +40 ns a frame.
        let cumulative = [102.4, 614.4, 1638.4, 1894.4, 3174.4];
        for group in [
            "director_stages_dr_4096",
            "director_stages_dr_1000000",
            "director_stages_nat_4096",
        ] {
            for (f, v) in FUNCTIONS.iter().zip(cumulative) {
                result(&d, group, f, v);
            }
        }
        // Not ours: ignored.
        result(&d, "director_established_dr_4096", "lvs", 1.0);
        let (bars, _) = load(&d).unwrap();
        let names: Vec<_> = bars.iter().map(|b| (b.method, b.conns)).collect();
        assert_eq!(names, [("DR", 4096), ("DR", 1_000_000), ("NAT", 4096)]);
        let seg = bars[0].segments();
        for (got, want) in seg.iter().zip([16.0, 32.0, 8.0, 40.0]) {
            assert!((got - want).abs() < 1e-9, "{seg:?}");
        }
        assert!((bars[0].total() - 96.0).abs() < 1e-9);

        let out = d.join("out.svg");
        let args = [
            "--criterion".to_string(),
            d.display().to_string(),
            out.display().to_string(),
        ];
        let report = execute(&args).unwrap();
        assert!(report.contains("wrote"), "{report}");
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("ns per packet (median)"));
        assert!(svg.contains(">96 ns<"), "the total");
        assert!(
            svg.contains(">40<") && svg.contains(">8.0<"),
            "segment labels"
        );
        assert!(svg.contains("1\u{2009}000\u{2009}000 connections"));
        // The command's && is escaped.
        assert!(svg.contains("-- stages &amp;&amp; cargo run"));
        assert!(!svg.contains("&&"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn dates_and_numbers() {
        assert_eq!(date(UNIX_EPOCH), "1970-01-01");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_709_251_200); // 2024-03-01
        assert_eq!(date(t), "2024-03-01");
        assert_eq!(thousands(4096), "4\u{2009}096");
        assert_eq!(thousands(999), "999");
        assert_eq!(ns(2.54), "2.5");
        assert_eq!(ns(41.4), "41");
        assert_eq!(tick_step(300.0), 50.0);
        assert_eq!(tick_step(140.0), 25.0);
    }
}
