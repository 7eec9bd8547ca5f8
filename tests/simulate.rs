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
