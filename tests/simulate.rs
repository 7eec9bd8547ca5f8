//! The simulator example, end to end: rules and flows files in, CSV and reports out.

#[path = "../examples/simulate.rs"]
#[allow(dead_code)]
mod simulate;

use std::path::PathBuf;

fn file(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("lvs-simulate-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p: PathBuf = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn run(args: &[&str]) -> Result<String, String> {
    simulate::execute(args.iter().map(|s| s.to_string()).collect())
}

const RULES: &str = "\
-A -t 10.0.0.1:80 -s wrr
-a -t 10.0.0.1:80 -r 192.168.1.1:80 -w 4
-a -t 10.0.0.1:80 -r 192.168.1.2:80 -w 3
-a -t 10.0.0.1:80 -r 192.168.1.3:80 -w 2
-A -u [2001:db8::1]:53 -s sh
-a -u [2001:db8::1]:53 -r [2001:db8::10]:53 -w 1
";

#[test]
fn wrr_sequence_matches_the_kernel_and_reports() {
    let rules = file("wrr.rules", RULES);
    let flows: String = std::iter::once("proto,src_ip,src_port,dst_ip,dst_port\n".to_string())
        .chain((0..9).map(|i| format!("tcp,198.51.100.{i},{},10.0.0.1,80\n", 1000 + i)))
        .chain(std::iter::once(
            "udp,2001:db8:1::5,5353,2001:db8::1,53\n".to_string(),
        ))
        .chain(std::iter::once(
            "tcp,198.51.100.9,1,10.0.0.9,80\n".to_string(),
        ))
        .collect();
    let flows = file("wrr.flows", &flows);
    let out = run(&["--rules", &rules, "--flows", &flows, "--report"]).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let servers: String = lines[..9]
        .iter()
        .map(|l| l.rsplit('.').next().unwrap().chars().next().unwrap())
        .collect();
    // ipvs.md §3.2: added A, B, C into an empty service: C B A | A | B A | C B A.
    assert_eq!(servers, "321121321");
    assert_eq!(lines[0], "198.51.100.0:1000,192.168.1.3:80");
    assert_eq!(lines[9], "[2001:db8:1::5]:5353,[2001:db8::10]:53");
    assert_eq!(lines[10], "198.51.100.9:1,none");
    assert!(
        out.contains("# service -t 10.0.0.1:80 scheduler wrr: 9 flows"),
        "{out}"
    );
    assert!(out.contains("max 1.000, min 1.000"), "{out}");
    assert!(out.contains("# 1 flows had no real server"), "{out}");
}

#[test]
fn removal_reports_moved_fraction() {
    let rules = file(
        "mh.rules",
        "-A -t 10.0.0.1:80 -s mh\n-a -t 10.0.0.1:80 -r 192.168.1.1:80\n-a -t 10.0.0.1:80 -r 192.168.1.2:80\n-a -t 10.0.0.1:80 -r 192.168.1.3:80\n",
    );
    let flows: String = (0..3000)
        .map(|i| {
            format!(
                "tcp,10.{}.{}.{},40000,10.0.0.1,80\n",
                i / 65536,
                (i / 256) % 256,
                i % 256
            )
        })
        .collect();
    let flows = file("mh.flows", &flows);
    let out = run(&[
        "--rules",
        &rules,
        "--flows",
        &flows,
        "--remove",
        "192.168.1.2:80",
    ])
    .unwrap();
    let on_two = out
        .lines()
        .filter(|l| l.ends_with(",192.168.1.2:80"))
        .count();
    assert!(on_two > 800, "{on_two}");
    // Maglev: the removed server's flows move, and only a few others (the table is refilled).
    let line = out
        .lines()
        .find(|l| l.starts_with("#   of the "))
        .expect("summary line");
    let kept: u64 = line["#   of the ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(kept as usize, 3000 - on_two, "{line}");
    let moved: u64 = line
        .split(", ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        moved * 50 < kept,
        "more than 2% of other flows moved: {line}"
    );
}

#[test]
fn bad_input_names_file_line_and_problem() {
    let rules = file(
        "bad.rules",
        "-A -t 10.0.0.1:80 -s wrr\n-a -t 10.0.0.1:80 -r 1.1.1.1 -w x\n",
    );
    let flows = file("ok.flows", "tcp,1.2.3.4,1,10.0.0.1,80\n");
    let e = run(&["--rules", &rules, "--flows", &flows]).unwrap_err();
    assert!(
        e.ends_with("bad.rules:2:33: expected weight, found \"x\""),
        "{e}"
    );
    let rules = file("dup.rules", "-A -t 10.0.0.1:80\n-A -t 10.0.0.1:80\n");
    let e = run(&["--rules", &rules, "--flows", &flows]).unwrap_err();
    assert!(
        e.ends_with("dup.rules:2: service -t 10.0.0.1:80 already exists"),
        "{e}"
    );
    let good = file("good.rules", RULES);
    let bad_flows = file(
        "bad.flows",
        "tcp,1.2.3.4,1,10.0.0.1,80\nicmp,1.2.3.4,0,10.0.0.1,0\n",
    );
    let e = run(&["--rules", &good, "--flows", &bad_flows]).unwrap_err();
    assert!(e.contains("bad.flows:2: expected proto tcp or udp"), "{e}");
    let short = file("short.flows", "tcp,1.2.3.4,99999,10.0.0.1,80\n");
    assert!(
        run(&["--rules", &good, "--flows", &short])
            .unwrap_err()
            .contains("short.flows:1: bad src_port")
    );
    let e = run(&[
        "--rules",
        &good,
        "--flows",
        &flows,
        "--remove",
        "9.9.9.9:80",
    ])
    .unwrap_err();
    assert!(e.contains("no such real server"), "{e}");
    assert!(
        run(&["--rules", "/nonexistent/x", "--flows", &flows])
            .unwrap_err()
            .starts_with("/nonexistent/x: ")
    );
    assert!(run(&["--bogus"]).is_err());
    assert!(
        run(&["--rules", &good])
            .unwrap_err()
            .contains("missing --flows")
    );
}

#[test]
fn demo_runs() {
    let out = run(&[]).unwrap();
    assert!(out.contains("built-in demonstration"));
    assert!(out.contains("scheduler mh: 3000 flows"));
    assert!(
        out.contains("not on a removed server (0.00%)"),
        "mh keeps other flows: {out}"
    );
}

/// Rules whose first TCP/UDP service is `-t 10.0.0.1:80` (scheduled by `sched`), four real
/// servers of unequal weight, after a firewall-mark service and before a UDP one, which
/// `--svg` leaves alone.
fn svg_case(sched: &str) -> (String, String) {
    let rules = file(
        &format!("svg-{sched}.rules"),
        &format!(
            "-A -f 7 -s rr\n-a -f 7 -r 192.168.1.8:0\n\
             -A -t 10.0.0.1:80 -s {sched}\n\
             -a -t 10.0.0.1:80 -r 192.168.1.1:80 -w 3\n-a -t 10.0.0.1:80 -r 192.168.1.2:80 -w 2\n\
             -a -t 10.0.0.1:80 -r 192.168.1.3:80 -w 2\n-a -t 10.0.0.1:80 -r 192.168.1.4:80 -w 1\n\
             -A -u 10.0.0.1:53 -s rr\n-a -u 10.0.0.1:53 -r 192.168.1.9:53\n"
        ),
    );
    let flows: String = (0..4000u32)
        .map(|i| {
            let h = i.wrapping_mul(2_654_435_761);
            let (proto, port) = if i % 4 == 3 { ("udp", 53) } else { ("tcp", 80) };
            format!(
                "{proto},{}.{}.{}.{},{},10.0.0.1,{port}\n",
                1 + (h >> 24) % 200,
                (h >> 16) & 255,
                (h >> 8) & 255,
                1 + h % 254,
                32768 + i % 20000
            )
        })
        .collect();
    (rules, file(&format!("svg-{sched}.flows"), &flows))
}

/// The comparison row of `sched`: (flows, max ratio, min ratio, moved %, must move %).
fn svg_row(out: &str, sched: &str) -> (u64, f64, f64, f64, f64) {
    let line = out
        .lines()
        .find(|l| l.split_whitespace().take(2).eq(["#", sched]))
        .unwrap_or_else(|| panic!("no row for {sched}: {out}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    let pct = |s: &str| s.trim_end_matches('%').parse::<f64>().unwrap();
    (
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
        f[4].parse().unwrap(),
        pct(f[5]),
        pct(f[6]),
    )
}

const SCHEDULERS: [&str; 15] = [
    "rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos", "sh", "dh", "mh", "lblc", "lblcr",
    "maglev",
];

#[test]
fn svg_is_well_formed_deterministic_and_names_every_scheduler() {
    let (rules, flows) = svg_case("wlc");
    let dir = std::env::temp_dir().join(format!("lvs-simulate-test-{}", std::process::id()));
    let (a, b) = (dir.join("a.svg"), dir.join("b.svg"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let out_a = run(&["--rules", &rules, "--flows", &flows, "--svg", a]).unwrap();
    let out_b = run(&["--rules", &rules, "--flows", &flows, "--svg", b]).unwrap();
    let (svg_a, svg_b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(svg_a == svg_b, "two runs wrote different SVGs");
    assert_eq!(out_a.replace(a, "F"), out_b.replace(b, "F"));
    let svg = String::from_utf8(svg_a).unwrap();
    assert!(svg.starts_with("<svg "), "{}", &svg[..80]);
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<svg").count(), 1);
    assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    // Tags are balanced and attribute values quoted: every `<` opens a tag that closes.
    for tag in svg.split('<').skip(1) {
        let body = tag.split('>').next().unwrap();
        assert!(tag.contains('>'), "unclosed tag {tag:?}");
        assert_eq!(body.matches('"').count() % 2, 0, "{body:?}");
    }
    // Text is written as <text> elements, one per line: names, titles, legends.
    let texts: Vec<&str> = svg
        .split("<text")
        .skip(1)
        .map(|t| {
            t.split_once(">\n")
                .unwrap()
                .1
                .split("\n</text>")
                .next()
                .unwrap()
        })
        .collect();
    for s in SCHEDULERS {
        assert_eq!(
            texts.iter().filter(|t| **t == s).count(),
            2,
            "{s} names a column in each panel"
        );
    }
    for t in [
        "scheduler",
        "flow share ÷ weight share",
        "flows of the service",
        "1.0: flow share = weight share",
        "weight 3 (1 server)",
        "weight 2 (2 servers)",
        "weight 1 (1 server)",
        "Each real server&apos;s share of the flows ÷ its share of the weight",
        "Flows that change real server when removing 192.168.1.1:80 (weight 3)",
        "were on the removed server: must move (the minimum)",
        "moved although their server stayed",
    ] {
        assert!(texts.contains(&t), "no text {t:?} in {texts:?}");
    }
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("Every scheduler on -t 10.0.0.1:80: 4 real servers")),
        "{texts:?}"
    );
    // Without --remove, the highest weight server is removed; the text says so.
    assert!(
        out_a.contains(
            "removing 192.168.1.1:80 (weight 3), picked as the highest weight (no --remove)"
        ),
        "{out_a}"
    );
    for s in SCHEDULERS {
        svg_row(&out_a, s);
    }
}

#[test]
fn svg_numbers_match_the_text_report() {
    // Under each of these schedulers, the row of the comparison repeats what --report and
    // --remove print for the service, and the picture labels the moved percentage.
    for sched in ["mh", "wlc", "rr", "maglev"] {
        let (rules, flows) = svg_case(sched);
        let path = std::env::temp_dir()
            .join(format!("lvs-simulate-test-{}", std::process::id()))
            .join(format!("{sched}.svg"));
        let path = path.to_str().unwrap();
        let out = run(&[
            "--rules",
            &rules,
            "--flows",
            &flows,
            "--report",
            "--remove",
            "192.168.1.2:80",
            "--svg",
            path,
        ])
        .unwrap();
        let (n, max, min, moved, must) = svg_row(&out, sched);
        assert_eq!(n, 3000, "{out}");
        let report = out
            .lines()
            .skip_while(|l| !l.starts_with(&format!("# service -t 10.0.0.1:80 scheduler {sched}")))
            .find(|l| l.contains("imbalance"))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            report.ends_with(&format!("max {max:.3}, min {min:.3}")),
            "{report} vs {max} {min}"
        );
        let removal = out
            .lines()
            .find(|l| l.starts_with("#   service -t 10.0.0.1:80: "))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            removal.contains(&format!("flows ({moved:.2}%) move")),
            "{removal} vs {moved}"
        );
        let kept: u64 = removal
            .split("of the ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("{removal}"));
        assert_eq!(
            format!("{:.2}", (n - kept) as f64 * 100.0 / n as f64),
            format!("{must:.2}"),
            "{removal}"
        );
        let svg = std::fs::read_to_string(path).unwrap();
        assert!(svg.contains(&format!("\n{moved:.1}%\n</text>")), "{moved}");
        assert!(svg.contains("removing 192.168.1.2:80 (weight 2)"));
    }
    // Consistent hashing moves little more than the removed server's flows; the others do not.
    let (rules, flows) = svg_case("wlc");
    let out = run(&[
        "--rules",
        &rules,
        "--flows",
        &flows,
        "--remove",
        "192.168.1.2:80",
        "--svg",
        std::env::temp_dir()
            .join(format!("lvs-simulate-test-{}", std::process::id()))
            .join("cmp.svg")
            .to_str()
            .unwrap(),
    ])
    .unwrap();
    for s in ["mh", "maglev"] {
        let (_, max, min, moved, must) = svg_row(&out, s);
        assert!(
            must > 20.0 && moved < must + 3.0,
            "{s}: {moved} vs {must}\n{out}"
        );
        assert!(max < 1.15 && min > 0.85, "{s}: {max} {min}\n{out}");
    }
    for s in ["rr", "wrr", "wlc", "lc"] {
        let (_, _, _, moved, must) = svg_row(&out, s);
        assert!(moved > must + 30.0, "{s}: {moved} vs {must}\n{out}");
    }
    let (_, max, min, ..) = svg_row(&out, "wrr");
    assert_eq!((max, min), (1.0, 1.0), "{out}");
}

#[test]
fn svg_errors() {
    let (rules, flows) = svg_case("mh");
    let e = run(&[
        "--rules",
        &rules,
        "--flows",
        &flows,
        "--svg",
        "/nonexistent/dir/x.svg",
    ])
    .unwrap_err();
    assert!(e.starts_with("/nonexistent/dir/x.svg: "), "{e}");
    assert!(run(&["--svg"]).unwrap_err().contains("--svg needs a FILE"));
    let mark = file("fwmark.rules", "-A -f 1 -s rr\n-a -f 1 -r 192.168.1.1:80\n");
    let e = run(&["--rules", &mark, "--flows", &flows, "--svg", "/tmp/x.svg"]).unwrap_err();
    assert!(e.contains("has no TCP or UDP virtual service"), "{e}");
    let e = run(&["--svg", "/tmp/x.svg", "--rules", &rules]).unwrap_err();
    assert!(e.contains("missing --flows"), "{e}");
    let e = run(&[
        "--rules",
        &rules,
        "--flows",
        &flows,
        "--remove",
        "9.9.9.9:80",
        "--svg",
        "/tmp/x.svg",
    ])
    .unwrap_err();
    assert!(e.contains("no such real server"), "{e}");
    assert!(run(&["--help"]).unwrap().contains("--svg FILE"));
}

/// `docs/simulate.svg` is what the documented command writes; the demonstration's numbers.
#[test]
fn committed_svg_is_what_the_demo_writes() {
    let dir = std::env::temp_dir().join(format!("lvs-simulate-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("demo.svg");
    let out = run(&["--svg", path.to_str().unwrap()]).unwrap();
    let written = std::fs::read(&path).unwrap();
    let committed =
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/simulate.svg"))
            .unwrap();
    assert!(
        written == committed,
        "docs/simulate.svg differs from what the demonstration writes: run \
         `cargo run --release --example simulate -- --svg docs/simulate.svg` and commit it"
    );
    assert!(committed.len() < 200_000, "{} bytes", committed.len());
    assert!(out.contains("--svg demonstration, 100000 flows"), "{out}");
    assert!(
        !out.contains("\n203."),
        "no per-flow CSV in the demonstration: {out}"
    );
    for s in ["mh", "maglev"] {
        let (n, max, min, moved, must) = svg_row(&out, s);
        assert_eq!(n, 100_000);
        assert!(
            must > 20.0 && moved < must + 2.0,
            "{s}: {moved} vs {must}\n{out}"
        );
        assert!(max < 1.05 && min > 0.95, "{s}: {max} {min}\n{out}");
    }
    for s in ["rr", "wrr", "lc", "wlc", "sed", "nq", "twos", "lblcr"] {
        let (_, _, _, moved, must) = svg_row(&out, s);
        assert!(moved > must + 50.0, "{s}: {moved} vs {must}\n{out}");
    }
}
