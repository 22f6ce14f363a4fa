//! The real data in `../shared/data` as the contract's events, for the tests and the benchmarks
//! (`benches/pipeline.rs` includes this file): UCI Online Retail's invoices as orders and
//! returns, and the CFPB extract's consumer complaints with a clock and an age limit to read
//! them at. Must not know what the job does with them.

use std::path::Path;

use customer_pulse::event::{format_millis, parse_millis};
use serde_json::Value;

/// An event's JSON: the envelope, then `fields` (JSON members, comma-separated; may be empty).
pub fn event(id: &str, customer: &str, kind: &str, when: &str, fields: &str) -> String {
    let sep = if fields.is_empty() { "" } else { "," };
    format!(
        r#"{{"event_id":"{id}","customer_id":"{customer}","type":"{kind}","occurred_at":"{when}"{sep}{fields}}}"#
    )
}

/// The events in order of their event time.
pub fn sorted_by_time(mut events: Vec<String>) -> Vec<String> {
    events.sort_by_key(|e| {
        let v: Value = serde_json::from_str(e).unwrap();
        parse_millis(v["occurred_at"].as_str().unwrap()).unwrap()
    });
    events
}

/// The positions of the columns `names` in the CSV `reader` reads.
fn columns<R: std::io::Read, const N: usize>(
    reader: &mut csv::Reader<R>,
    names: [&str; N],
) -> [usize; N] {
    let headers = reader.headers().unwrap();
    names.map(|name| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    })
}

/// The UCI Online Retail invoices (../shared/data) as events: one `order.placed` per invoice
/// of a known customer, its lines summed (margin: a quarter of the amount, as the data has no
/// costs), one `order.returned` per cancellation invoice ("C..."), ordered by event time.
pub fn online_retail(path: &Path) -> Vec<String> {
    let out = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(path)
        .output()
        .expect("gzip runs");
    assert!(out.status.success(), "cannot read {}", path.display());
    // (invoice, customer, time, amount in pence), in order of first line. The lines of an
    // invoice are adjacent but for one (542806), so they are gathered by invoice number.
    let mut invoices: Vec<(String, String, String, i64)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    // The csv crate, as for the CFPB extract: a description may hold quoted commas.
    let mut reader = csv::Reader::from_reader(&out.stdout[..]);
    let [invoice_at, quantity_at, time_at, price_at, customer_at] = columns(
        &mut reader,
        [
            "InvoiceNo",
            "Quantity",
            "InvoiceDate",
            "UnitPrice",
            "CustomerID",
        ],
    );
    for row in reader.records() {
        let row = row.unwrap();
        let (invoice, customer, time) = (&row[invoice_at], &row[customer_at], &row[time_at]);
        if customer.is_empty() {
            continue;
        }
        let quantity: f64 = row[quantity_at].parse().unwrap();
        let price: f64 = row[price_at].parse().unwrap();
        let pence = (quantity * price * 100.0).round() as i64;
        match index.get(invoice) {
            Some(i) => invoices[*i].3 += pence,
            None => {
                index.insert(invoice.to_owned(), invoices.len());
                invoices.push((invoice.into(), customer.into(), time.into(), pence));
            }
        }
    }
    let events = invoices
        .into_iter()
        .filter_map(|(invoice, customer, time, pence)| {
            if let Some(original) = invoice.strip_prefix('C') {
                let fields = format!(r#""order_id":"{original}","amount_minor":{}"#, pence.abs());
                Some(event(&invoice, &customer, "order.returned", &time, &fields))
            } else if pence >= 0 {
                let fields = format!(
                    r#""order_id":"{invoice}","amount_minor":{pence},"margin_minor":{}"#,
                    pence / 4
                );
                Some(event(&invoice, &customer, "order.placed", &time, &fields))
            } else {
                None
            }
        })
        .collect();
    sorted_by_time(events)
}

/// A clock to read the extract at: 2023-05-01T00:00:00Z, four days after its last complaint.
pub const CFPB_CLOCK_MS: i64 = 1_682_899_200_000;
/// An input age limit to read it with: a year, which leaves out (as too old) its four
/// complaints from before 2023.
pub const CFPB_MAX_AGE_MS: i64 = 365 * 86_400_000;
/// `settings` made to read the CFPB extract: its six categories, the complaint trends' defaults
/// for them, and its age limit.
pub fn read_cfpb_with(settings: &mut customer_pulse::processor::ProcessorSettings) {
    settings.rules.complaint_categories = CFPB_CATEGORIES.iter().map(|c| c.to_string()).collect();
    settings.rules.max_event_age_ms = CFPB_MAX_AGE_MS;
    settings.trends = customer_pulse::trends::TrendSettings::defaults(&CFPB_CATEGORIES);
}

/// The categories a complaint desk might configure for the bureau's products (our choice),
/// `other` besides.
pub const CFPB_CATEGORIES: [&str; 6] = [
    "credit_reporting",
    "debt_collection",
    "bank_account",
    "credit_card",
    "loans",
    "money_transfer",
];

fn cfpb_category(product: &str) -> &'static str {
    match product {
        "Credit reporting, credit repair services, or other personal consumer reports" => {
            "credit_reporting"
        }
        "Debt collection" => "debt_collection",
        "Checking or savings account" => "bank_account",
        "Credit card or prepaid card" | "Credit card" => "credit_card",
        "Mortgage"
        | "Vehicle loan or lease"
        | "Student loan"
        | "Payday loan, title loan, or personal loan" => "loans",
        "Money transfer, virtual currency, or money service" => "money_transfer",
        other => panic!("a product this test does not map: {other}"),
    }
}

pub struct Complaint {
    pub id: String,
    pub category: &'static str,
    pub at: i64,
    pub timely: bool,
}

/// The CFPB extract's complaints (`../shared/data/cfpb_complaints_sample.csv`), in the order
/// received (by time, then id), as a stream would carry them. It gives the day a complaint was received
/// (dd-mm-yyyy), not the hour: each is placed in its day by its id, so that the hourly windows
/// do not all fall on midnight.
pub fn cfpb_complaints(path: &Path) -> Vec<Complaint> {
    let mut reader = csv::Reader::from_path(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let [received, product, timely, id] = columns(
        &mut reader,
        [
            "Date_received",
            "Product",
            "Timely_response?",
            "Complaint_ID",
        ],
    );
    let mut complaints = reader
        .records()
        .map(|row| {
            let row = row.unwrap();
            let date: Vec<&str> = row[received].split('-').collect();
            let [d, m, y] = date[..] else {
                panic!("a date not dd-mm-yyyy: {}", &row[received])
            };
            let day = parse_millis(&format!("{y}-{m}-{d}T00:00:00Z")).unwrap();
            let second: i64 = row[id].parse::<i64>().unwrap() % 86_400;
            Complaint {
                id: row[id].to_owned(),
                category: cfpb_category(&row[product]),
                at: day + second * 1_000,
                timely: &row[timely] == "Yes",
            }
        })
        .collect::<Vec<_>>();
    complaints.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
    complaints
}

pub fn cfpb_event(c: &Complaint) -> String {
    serde_json::json!({
        "event_id": format!("cfpb-{}", c.id),
        "customer_id": format!("cfpb-{}", c.id),
        "type": "complaint.opened",
        "occurred_at": format_millis(c.at),
        "complaint_id": c.id,
        "category": c.category,
        "severity": if c.timely { "medium" } else { "high" },
    })
    .to_string()
}
