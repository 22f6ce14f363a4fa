//! The README's first command: `demo` runs on its own (embedded broker, live generator, the job,
//! HTTP) and prints summaries showing live traffic folded.

use std::process::Command;

#[test]
fn the_demo_runs_by_itself_and_folds_live_traffic() {
    let port = crate::broker::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_customer-pulse"))
        .args([
            "demo",
            "--customers",
            "200",
            "--rate",
            "100",
            "--seconds",
            "20",
        ])
        .env(
            "CUSTOMER_PULSE__HTTP__LISTEN_ADDRESS",
            format!("127.0.0.1:{port}"),
        )
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("http://127.0.0.1:{port}/metrics")),
        "{stdout}"
    );
    // Every summary after the history was folded shows live events per second.
    let rates: Vec<f64> = stdout
        .lines()
        .filter_map(|l| {
            l.split(" s]")
                .nth(1)?
                .split("events/s")
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .collect();
    assert!(rates.len() >= 2, "{stdout}");
    assert!(
        rates.last().is_some_and(|r| *r > 20.0),
        "live traffic is folded: {stdout}"
    );
    assert!(
        stdout.contains(" risk "),
        "top churn risks are listed: {stdout}"
    );
    // Two churners (one in a hundred customers) cancel 6 and 16 s in: by the last summary the
    // first is lost in its churn-risk record, for its cancellation.
    assert!(
        stdout.contains("2 churners are injected"),
        "the churners are announced: {stdout}"
    );
    let last_churners = stdout
        .lines()
        .rfind(|l| l.contains("churners: "))
        .unwrap_or_else(|| panic!("a churners line: {stdout}"));
    let lost: u32 = last_churners
        .split("injected so far, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{last_churners}"));
    assert!(lost >= 1, "{last_churners}");
    assert!(last_churners.contains("cancelled"), "{last_churners}");
    // The embedded broker stops after the job: what its producers, let go but not yet
    // destroyed, hear of that is not the operator's to read.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(" WARN ") && !stderr.contains(" ERROR "),
        "a demo that runs its course warns of nothing: {stderr}"
    );
}

#[test]
fn the_demo_with_its_http_address_taken_says_so_before_it_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_customer-pulse"))
        .args([
            "demo",
            "--customers",
            "20",
            "--rate",
            "10",
            "--seconds",
            "30",
        ])
        .env("CUSTOMER_PULSE__HTTP__LISTEN_ADDRESS", address.to_string())
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "the error names the address: {stderr}"
    );
    assert!(
        stderr.contains("another address: CUSTOMER_PULSE__HTTP__LISTEN_ADDRESS="),
        "the error says how to give another: {stderr}"
    );
    assert!(
        !stdout.contains(" s]"),
        "no summaries of a job that never ran: {stdout}"
    );
}
