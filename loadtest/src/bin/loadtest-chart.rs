//! `loadtest-chart OUT.svg TITLE REPORT.json...`: p50/p95/p99 against offered load from
//! open-loop `openkcm loadtest --json` reports.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, title, reports @ ..] = args.as_slice() else {
        eprintln!("usage: loadtest-chart OUT.svg TITLE REPORT.json...");
        return ExitCode::from(2);
    };
    let mut points = Vec::new();
    for path in reports {
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()));
        match parsed {
            Ok(p) => points.push(p),
            Err(e) => {
                eprintln!("loadtest-chart: {path}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(e) = std::fs::write(out, loadtest::chart::svg(title, &points)) {
        eprintln!("loadtest-chart: {out}: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
