use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Turnstile, example, fetch, signal_process, tool, wait_until};

const COUNT: &str = "http_server_request_duration_seconds_count";

/// The arbiter's page.
fn scrape(server: &Turnstile) -> String {
    let (status, page) = fetch(server.metrics_addr(), "/metrics").expect("a scrape");
    assert_eq!(status, 200, "{page}");
    page
}

/// The sum of the samples named `name`, over all their labels.
fn total(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .map(|line| line.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum()
}

/// Scrapes until the request total is `expected`, and returns that page.
/// A request's count lands just after its last byte, so the very last one
/// may trail its answer by a moment; it never overshoots.
fn scrape_until_total(server: &Turnstile, expected: f64) -> String {
    let mut last = String::new();
    wait_until(Duration::from_secs(5), || {
        last = scrape(server);
        let counted = total(&last, COUNT);
        assert!(
            counted <= expected,
            "{counted} counted for {expected} requests"
        );
        (counted == expected).then_some(())
    })
    .unwrap_or_else(|| panic!("expected {expected} requests in\n{last}"));
    last
}

/// Sends `count` requests, spread over four clients.
fn requests(server: &Turnstile, targets: impl Fn(usize) -> String + Sync, count: usize) {
    std::thread::scope(|scope| {
        for client in 0..4 {
            let targets = &targets;
            scope.spawn(move || {
                for n in (client..count).step_by(4) {
                    fetch(server.addr(), &targets(n)).expect("an answer");
                }
            });
        }
    });
}

/// `promtool check metrics` on `page`: the output of a real consumer.
fn promtool_check(page: &str) {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics:\n{}{}\n{page}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ANCHOR: exact_totals
#[test]
fn totals_across_workers_are_exact_and_promtool_accepts_them() {
    let server = Turnstile::start(&["--workers", "2", "--metrics-bind", "127.0.0.1:0"]);
    let workers = server.wait_for_workers(2);
    // 280 to routes, 100 to distinct unknown paths.
    requests(
        &server,
        |n| match n {
            0..280 => ["/", "/healthz", "/stream?chunks=2", "/echo"][n % 4].to_owned(),
            _ => format!("/no-such-page-{n}?token=s3cret"),
        },
        380,
    );
    let page = scrape_until_total(&server, 380.0);
    promtool_check(&page);

    // Both workers served, and one series holds every unknown path.
    assert_eq!(server.workers(), workers);
    let unmatched: Vec<&str> = page
        .lines()
        .filter(|line| line.starts_with(COUNT) && line.contains("(unmatched)"))
        .collect();
    assert_eq!(unmatched.len(), 1, "{unmatched:?}");
    assert!(unmatched[0].ends_with(" 100"), "{unmatched:?}");
    assert!(!page.contains("no-such-page") && !page.contains("s3cret"));
    for route in ["/", "/healthz", "/stream", "/echo"] {
        assert!(page.contains(&format!("http_route=\"{route}\"")), "{route}");
    }
    assert_eq!(
        page.matches("# TYPE http_server_request_duration_seconds ")
            .count(),
        1
    );
    assert_eq!(total(&page, "turnstile_workers"), 2.0);
    assert!(total(&page, "process_resident_memory_bytes") > 0.0);
    // Every request has a response size, and a request size (its
    // Content-Length, or none at all); none is still being served.
    assert_eq!(
        total(&page, "http_server_response_body_size_bytes_count"),
        380.0
    );
    assert_eq!(
        total(&page, "http_server_request_body_size_bytes_count"),
        380.0
    );
    assert_eq!(total(&page, "http_server_active_requests"), 0.0);

    // A request the engine refuses never reaches the layers; it is counted
    // by its status.
    let refused = r#"turnstile_refused_requests_total{http_response_status_code="400"}"#;
    assert_eq!(total(&page, refused), 0.0);
    let answer = server.send(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    assert!(answer.starts_with(b"HTTP/1.1 400 "));
    let page = scrape(&server);
    assert_eq!(total(&page, refused), 1.0);
    assert_eq!(total(&page, COUNT), 380.0);
}
// ANCHOR_END: exact_totals

#[test]
fn counters_never_go_backwards_when_workers_are_recycled_or_killed() {
    let server = Turnstile::start(&[
        "--workers",
        "2",
        "--max-requests",
        "25",
        "--metrics-bind",
        "127.0.0.1:0",
    ]);
    server.wait_for_workers(2);
    let mut seen = 0.0;
    let mut check = |page: &str| {
        let counted = total(page, COUNT);
        assert!(counted >= seen, "the total went from {seen} to {counted}");
        seen = counted;
    };
    // Each worker retires after 25 requests, several times over.
    for round in 1..=4 {
        requests(&server, |_| "/".to_owned(), 30);
        check(&scrape_until_total(&server, 30.0 * f64::from(round)));
    }
    // A restart is counted when the retired worker is reaped, which may
    // trail its last answer.
    let recycled = r#"turnstile_worker_restarts_total{reason="max_requests"}"#;
    let page = wait_until(Duration::from_secs(5), || {
        let page = scrape(&server);
        (total(&page, recycled) >= 3.0).then_some(page)
    })
    .unwrap_or_else(|| scrape(&server));
    assert!(total(&page, recycled) >= 3.0, "{page}");

    // A worker killed outright: what it counted up to the last page stays.
    let workers = server.wait_for_workers(2);
    let victim = *workers.iter().next().unwrap();
    signal_process(victim, "KILL");
    wait_until(Duration::from_secs(10), || {
        let workers = server.workers();
        (workers.len() == 2 && !workers.contains(&victim)).then_some(())
    })
    .expect("the killed worker is replaced");
    let page = scrape(&server);
    check(&page);
    assert_eq!(total(&page, COUNT), 120.0);
    assert_eq!(
        total(&page, "turnstile_worker_restarts_total{reason=\"exit\"}"),
        1.0
    );
    let cpu = total(&page, "process_cpu_seconds_total");
    server.wait_for_workers(2);
    requests(&server, |_| "/".to_owned(), 20);
    let page = scrape_until_total(&server, 140.0);
    check(&page);
    assert!(total(&page, "process_cpu_seconds_total") >= cpu);
    promtool_check(&page);
}

#[test]
fn a_single_process_serves_its_own_page_on_the_main_port() {
    let server = Turnstile::start(&["--metrics-path", "/metrics"]);
    server.wait_for_workers(1);
    requests(&server, |_| "/healthz".to_owned(), 8);
    let page = wait_until(Duration::from_secs(5), || {
        let (_, page) = fetch(server.addr(), "/metrics").unwrap();
        (total(&page, COUNT) == 8.0).then_some(page)
    })
    .expect("8 requests counted");
    assert!(page.contains("process_open_fds "));
    // The scrapes themselves are not counted.
    let (_, again) = fetch(server.addr(), "/metrics").unwrap();
    assert_eq!(total(&again, COUNT), 8.0);
    promtool_check(&page);
}

#[test]
fn bad_metrics_settings_stop_the_binary() {
    for args in [
        ["--metrics-bind", "not an address"],
        ["--metrics-path", "metrics"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_turnstile"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&args[0][2..].replace('-', "_")), "{stderr}");
    }
}

/// A real Prometheus server, on loopback with its own storage, scrapes the
/// endpoint; its query API gives `up` and the request total.
#[test]
fn a_real_prometheus_scrapes_the_endpoint() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let server = Turnstile::start(&["--workers", "2", "--metrics-bind", "127.0.0.1:0"]);
    server.wait_for_workers(2);
    requests(&server, |n| format!("/?n={n}"), 57);
    scrape_until_total(&server, 57.0);

    let dir = std::env::temp_dir().join(format!("turnstile-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: turnstile\n    static_configs:\n      - targets: ['{}']\n",
            server.metrics_addr()
        ),
    )
    .unwrap();
    let web = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut child = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    let query = |promql: &str| -> Option<f64> {
        let target = format!("/api/v1/query?query={promql}");
        let (status, body) = fetch(&web, &target).ok()?;
        let body: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200).then_some(())?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let up = wait_until(Duration::from_secs(60), || {
        query("up%7Bjob%3D%22turnstile%22%7D").filter(|up| *up == 1.0)
    });
    let requests = wait_until(Duration::from_secs(30), || {
        query("sum(http_server_request_duration_seconds_count)").filter(|n| *n == 57.0)
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(up, Some(1.0), "Prometheus never scraped the endpoint");
    assert_eq!(requests, Some(57.0), "Prometheus saw another total");
}

#[test]
fn the_example_sums_its_own_counter_over_both_workers() {
    let mut command = Command::new(example("prometheus_app"));
    command.args(["--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0"]);
    command.args(["--workers", "2", "--middleware", "metrics"]);
    let server = Turnstile::start_command(command);
    server.wait_for_workers(2);
    requests(
        &server,
        |n| match n % 3 {
            0 => format!("/books/{n}"),
            1 => format!("/books/{n}/buy"),
            _ => "/nowhere".to_owned(),
        },
        30,
    );
    let page = scrape_until_total(&server, 30.0);
    assert_eq!(total(&page, "books_sold_total"), 10.0);
    assert!(page.contains("# HELP books_sold_total Books sold."));
    assert!(page.contains(r#"http_route="/books/{id}/buy""#));
    promtool_check(&page);
}
