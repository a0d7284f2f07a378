//! `pik plan`: a recorded build's job log replayed against simulated builders
//! ([`crate::dist::model`]), as a table or JSON.

use super::cli::PlanArgs;
use crate::dist::model::{self, Builder, Prediction, Recorded, Setup};
use anyhow::{bail, Result};
use std::process::ExitCode;

/// One predicted setup: its label and the model's answer.
#[derive(serde::Serialize)]
struct Row {
    builders: String,
    slots: usize,
    #[serde(flatten)]
    prediction: Prediction,
    /// Predicted wall over the prediction for this machine alone.
    ratio: f64,
}

/// Runs `pik plan`.
pub(super) fn run(a: PlanArgs) -> Result<ExitCode> {
    if !(a.speed > 0.0 && a.speed.is_finite()) || a.rtt_ms < 0.0 || a.slots == 0 {
        bail!("--speed must be > 0, --rtt-ms ≥ 0 and --slots ≥ 1");
    }
    let log = if a.log.is_dir() {
        a.log.join("pik-jobs.log")
    } else {
        a.log.clone()
    };
    let rec = Recorded::read(&log)?;
    let local = a.local.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let builder = |slots| Builder {
        slots,
        speed: a.speed,
        rtt: a.rtt_ms / 1e3,
    };
    let mut setups: Vec<(String, Vec<Builder>)> = vec![("0".into(), Vec::new())];
    if a.hosts.is_empty() {
        for &n in a.builders.iter().filter(|&&n| n > 0) {
            setups.push((n.to_string(), vec![builder(a.slots); n]));
        }
    } else {
        let hosts = crate::dist::parse_hosts(&a.hosts)?;
        let remote: Vec<Builder> = hosts
            .iter()
            .filter(|h| !h.is_local())
            .map(|h| builder(h.slots))
            .collect();
        setups.push((a.hosts.join(" "), remote));
    }
    let predict = |builders: Vec<Builder>| {
        model::predict(
            &rec,
            &Setup {
                local,
                builders,
                cpp: a.cpp_ms.map(|ms| ms / 1e3),
            },
        )
    };
    let alone = predict(Vec::new()).wall_s;
    let rows: Vec<Row> = setups
        .into_iter()
        .map(|(label, b)| {
            let slots = b.iter().map(|b| b.slots).sum();
            let prediction = predict(b);
            Row {
                builders: label,
                slots,
                ratio: prediction.wall_s / alone.max(1e-9),
                prediction,
            }
        })
        .collect();
    if a.json {
        let doc = serde_json::json!({
            "log": log,
            "recorded_make_s": rec.make,
            "compiles": rec.jobs.len(),
            "distributable": rec.jobs.iter().filter(|j| j.distributable).count(),
            "local_cores": local,
            "speed": a.speed,
            "rtt_ms": a.rtt_ms,
            "predictions": rows,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_table(&rec, local, &a, &rows);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(rec: &Recorded, local: usize, a: &PlanArgs, rows: &[Row]) {
    let distributable = rec.jobs.iter().filter(|j| j.distributable).count();
    println!(
        "recorded: make {:.1} s, {} compiles ({distributable} a builder may take)",
        rec.make,
        rec.jobs.len()
    );
    let cpp = a
        .cpp_ms
        .map_or("the log's preprocessing time (else 128 ms)".into(), |ms| {
            format!("{ms} ms")
        });
    println!(
        "model: {local} local core(s); builder cores at {:.2}× a local core, {} ms per job, {cpp} \
         of local preprocessing per remote job",
        a.speed, a.rtt_ms
    );
    println!(
        "{:<10} {:>6} {:>17} {:>9} {:>9} {:>12}",
        "builders", "slots", "predicted make s", "× alone", "serial s", "remote jobs"
    );
    for r in rows {
        println!(
            "{:<10} {:>6} {:>17.1} {:>9.3} {:>9.1} {:>12}",
            r.builders,
            r.slots,
            r.prediction.wall_s,
            r.ratio,
            r.prediction.serial_s,
            r.prediction.remote_jobs
        );
    }
}
